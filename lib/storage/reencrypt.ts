import type { DataSource } from 'typeorm';
import type { KeyRing } from '../crypto/key-ring.js';
import { getInstalledKeyRing } from '../crypto/key-ring.registry.js';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import {
  AtProtoDecryptionError,
  type AtProtoDecryptionFailure,
} from '../errors/at-proto-decryption.error.js';
import { AtProtoKeyRingUnavailableError } from '../errors/at-proto-key-ring-unavailable.error.js';
import { BOT_SESSION_TABLE } from './entities/bot-session.entity.js';
import { OAUTH_SESSION_TABLE } from './entities/oauth-session.entity.js';
import { OAUTH_STATE_TABLE } from './entities/oauth-state.entity.js';
import { requireSqlFamily } from './migrations/dialect.js';
import { withTransientRetry } from './transient-retry.js';

/**
 * The tables {@link reencrypt} walks.
 * @publicApi
 */
export type ReencryptTable =
  typeof OAUTH_STATE_TABLE | typeof OAUTH_SESSION_TABLE | typeof BOT_SESSION_TABLE;

/**
 * Counts for one table, in rows.
 * @publicApi
 */
export interface ReencryptTableCounts {
  /** Rows read. */
  scanned: number;
  /** Rows rewritten under the active key. */
  rewritten: number;
  /** Rows left untouched because a value in them could not be decrypted (see `failures`). */
  failed: number;
  /**
   * Rows changed or deleted by another writer between being read and being rewritten: left
   * as that writer made them. A row the other writer wrote under an old key (an instance not
   * yet configured with the new active key) is picked up by the next run.
   */
  skipped: number;
}

/**
 * A stored value {@link reencrypt} could not decrypt. It names the row and the key id,
 * never the value.
 * @publicApi
 */
export interface ReencryptFailure {
  table: ReencryptTable;
  /** The row's primary key: the OAuth state key, or the DID of a session. */
  key: string;
  /** `table.column` of the value. */
  column: string;
  /** Key id written in the envelope, when it could be read. */
  keyId: string | undefined;
  /** Why it could not be decrypted (see {@link AtProtoDecryptionFailure}). */
  reason: AtProtoDecryptionFailure;
}

/**
 * Progress reported after each batch: the counts so far for the table being walked.
 * @publicApi
 */
export interface ReencryptProgress extends ReencryptTableCounts {
  table: ReencryptTable;
}

/**
 * Options of {@link reencrypt}.
 * @publicApi
 */
export interface ReencryptOptions {
  /** Rows read per query. @default 500 */
  batchSize?: number;
  /**
   * The key ring to decrypt and encrypt with: its active key is the target, and it must
   * still hold every key that values were written with. @default the installed key ring
   */
  keyRing?: KeyRing;
  /** Called after each batch, e.g. to log progress of a long run. */
  onProgress?: (progress: ReencryptProgress) => void;
}

/**
 * What {@link reencrypt} did.
 * @publicApi
 */
export interface ReencryptResult {
  /** The key every rewritten value is now encrypted with. */
  activeKeyId: string;
  /** Counts per table. */
  tables: Record<ReencryptTable, ReencryptTableCounts>;
  /** Every value that could not be decrypted (its row was left untouched). */
  failures: ReencryptFailure[];
}

const DEFAULT_BATCH_SIZE = 500;

interface TableSpec {
  table: ReencryptTable;
  /** Primary key column. */
  key: string;
  /** Encrypted columns. */
  secrets: readonly string[];
  /**
   * Column whose value a concurrent write always changes: the rewrite only applies if it
   * still holds the value read, so a concurrent write is never overwritten with older data.
   */
  guard: string;
  /** Whether the rewrite increments `guard` (the session `version`). */
  bumpGuard: boolean;
}

const TABLES: readonly TableSpec[] = [
  // States are written once per login and never updated by the OAuth client; a store `set`
  // of an existing key (an upsert) always moves `expires_at`, which is what the guard checks.
  {
    table: OAUTH_STATE_TABLE,
    key: 'key',
    secrets: ['data'],
    guard: 'expires_at',
    bumpGuard: false,
  },
  // Sessions are rewritten on every token refresh, and every write increments `version`,
  // which is what the guard checks. The rewrite itself leaves `version` alone: it changes no
  // value, and a refresh that read the session under the lock just before must still be
  // able to store its rotated tokens (a fenced write compares the version it read; a bump
  // here would refuse it, and the used refresh token would stay stored: a logout).
  {
    table: OAUTH_SESSION_TABLE,
    key: 'did',
    secrets: ['token_set', 'dpop_key'],
    guard: 'version',
    bumpGuard: false,
  },
  // Bot sessions (app-password logins): like OAuth sessions, every write increments
  // `version` and a refresh's fenced write compares it, so the rewrite leaves it alone.
  {
    table: BOT_SESSION_TABLE,
    key: 'did',
    secrets: ['token_set'],
    guard: 'version',
    bumpGuard: false,
  },
];

/**
 * Rewrites every encrypted value that is not under the key ring's active key, so that a
 * retired key can then be removed from the ring. Run it once every instance of the
 * application encrypts with the new active key (with the old keys still in its ring), else
 * instances still on the old key keep writing values under it. It is safe to run while the
 * application serves traffic, to interrupt, and to run again (a second run rewrites only
 * what is left).
 *
 * It walks `atproto_oauth_state` (`data`) and `atproto_oauth_session` (`token_set`,
 * `dpop_key`) in primary-key order, `batchSize` rows per query, with plain SQL: the
 * DataSource needs no entities, only this library's tables. For each value whose key id is
 * not the active one it decrypts with the ring and writes it back encrypted under the
 * active key. A row changed concurrently is left alone (`skipped`). A value that fails to
 * decrypt is reported in `failures` and its row is never written; the walk goes on.
 * Plain columns (expiry, `updated_at`) are not changed: re-encryption is not activity.
 *
 * @example
 * installKeyRing(new KeyRing({ activeKeyId: '2027-01', keys: { '2026-11': OLD, '2027-01': NEW } }));
 * const result = await reencrypt(dataSource, { onProgress: (p) => console.log(p) });
 * // No failures and nothing skipped: '2026-11' can now be removed from encryption.keys.
 *
 * @throws AtProtoKeyRingUnavailableError when no `keyRing` is given and none is installed.
 * @throws AtProtoConfigError for an invalid `batchSize`, an uninitialized DataSource or an
 * unsupported database.
 * @publicApi
 */
export async function reencrypt(
  dataSource: DataSource,
  options: ReencryptOptions = {},
): Promise<ReencryptResult> {
  const keyRing = options.keyRing ?? getInstalledKeyRing();
  if (!keyRing) {
    throw new AtProtoKeyRingUnavailableError(
      `${OAUTH_STATE_TABLE}, ${OAUTH_SESSION_TABLE} and ${BOT_SESSION_TABLE} in reencrypt() (pass options.keyRing, or install a key ring)`,
    );
  }
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new AtProtoConfigError(
      [`batchSize must be a positive integer, got ${String(batchSize)}.`],
      'reencrypt() options',
    );
  }
  if (!dataSource.isInitialized) {
    throw new AtProtoConfigError(
      ['the DataSource is not initialized: call dataSource.initialize() first.'],
      'reencrypt() call',
    );
  }
  // Only the dialects whose schema this library ships: the SQL below is portable across them.
  requireSqlFamily(dataSource.options.type);

  const result: ReencryptResult = {
    activeKeyId: keyRing.activeKeyId,
    tables: {
      [OAUTH_STATE_TABLE]: { scanned: 0, rewritten: 0, failed: 0, skipped: 0 },
      [OAUTH_SESSION_TABLE]: { scanned: 0, rewritten: 0, failed: 0, skipped: 0 },
      [BOT_SESSION_TABLE]: { scanned: 0, rewritten: 0, failed: 0, skipped: 0 },
    },
    failures: [],
  };
  for (const spec of TABLES) {
    await reencryptTable(dataSource, keyRing, spec, batchSize, result, options.onProgress);
  }
  return result;
}

async function reencryptTable(
  dataSource: DataSource,
  keyRing: KeyRing,
  spec: TableSpec,
  batchSize: number,
  result: ReencryptResult,
  onProgress: ReencryptOptions['onProgress'],
): Promise<void> {
  const e = (name: string) => dataSource.driver.escape(name);
  const param = (index: number) => dataSource.driver.createParameter(`p${index}`, index);
  const counts = result.tables[spec.table];
  const columns = [spec.key, spec.guard, ...spec.secrets].map(e).join(', ');
  // Keyset pagination (WHERE key > last ORDER BY key) rather than OFFSET: each batch costs
  // the same however far the walk is, and rows inserted or deleted meanwhile cannot make it
  // skip or repeat a row that was there all along.
  const selectFirst = `SELECT ${columns} FROM ${e(spec.table)} ORDER BY ${e(spec.key)} LIMIT ${batchSize}`;
  const selectNext =
    `SELECT ${columns} FROM ${e(spec.table)} WHERE ${e(spec.key)} > ${param(0)} ` +
    `ORDER BY ${e(spec.key)} LIMIT ${batchSize}`;

  let after: unknown;
  for (;;) {
    // dataSource.query() runs on the primary ('master') even with TypeORM `replication`
    // configured (only query builders read from replicas by default): a replica could hand
    // back a row older than the primary's, whose guard would then never match (`skipped`).
    const rows: Array<Record<string, unknown>> = await withTransientRetry(
      `Reading ${spec.table} for re-encryption`,
      () =>
        after === undefined ? dataSource.query(selectFirst) : dataSource.query(selectNext, [after]),
    );
    for (const row of rows) {
      counts.scanned++;
      const key = String(row[spec.key]);
      const rewrites: Array<[column: string, envelope: string]> = [];
      let failed = false;
      for (const column of spec.secrets) {
        const context = `${spec.table}.${column}`;
        // Not a string at all: '' makes decrypt() report it as malformed, like any non-envelope.
        const envelope = storedEnvelope(row[column]) ?? '';
        if (!keyRing.needsReencryption(envelope)) continue;
        try {
          rewrites.push([column, keyRing.encrypt(keyRing.decrypt(envelope, context), context)]);
        } catch (error) {
          if (!(error instanceof AtProtoDecryptionError)) throw error;
          // Reported, never overwritten: the value may still be recovered (a key put back
          // in the ring), and a half-rewritten row would hide which value was damaged.
          result.failures.push({
            table: spec.table,
            key,
            column: context,
            keyId: error.keyId,
            reason: error.reason,
          });
          failed = true;
        }
      }
      if (failed) {
        counts.failed++;
      } else if (rewrites.length > 0) {
        const written = await rewrite(dataSource, spec, row, rewrites);
        if (written) counts.rewritten++;
        else counts.skipped++;
      }
    }
    if (rows.length > 0) onProgress?.({ table: spec.table, ...counts });
    if (rows.length < batchSize) return;
    after = rows[rows.length - 1]![spec.key];
  }
}

/**
 * Writes the re-encrypted values of one row, only if no one changed the row since it was
 * read. Resolves whether the row was written.
 */
async function rewrite(
  dataSource: DataSource,
  spec: TableSpec,
  row: Record<string, unknown>,
  rewrites: ReadonlyArray<[column: string, envelope: string]>,
): Promise<boolean> {
  const e = (name: string) => dataSource.driver.escape(name);
  const param = (index: number) => dataSource.driver.createParameter(`p${index}`, index);
  const sets = rewrites.map(([column], i) => `${e(column)} = ${param(i)}`);
  if (spec.bumpGuard) sets.push(`${e(spec.guard)} = ${e(spec.guard)} + 1`);
  const n = rewrites.length;
  const sql =
    `UPDATE ${e(spec.table)} SET ${sets.join(', ')} ` +
    `WHERE ${e(spec.key)} = ${param(n)} AND ${e(spec.guard)} = ${param(n + 1)}`;
  // The columns are `json` holding a JSON string (see entities/columns.ts), so the envelope
  // is written as JSON text, as TypeORM writes it. The key and guard go back exactly as the
  // driver returned them (a bigint may come back as a string), so they compare equal.
  const parameters = [
    ...rewrites.map(([, envelope]) => JSON.stringify(envelope)),
    row[spec.key],
    row[spec.guard],
  ];
  let attempt = 0;
  return withTransientRetry(`Re-encrypting a row of ${spec.table}`, async () => {
    attempt++;
    // A query runner of its own per attempt: after a lost connection, a retry must not
    // reuse the broken one.
    const runner = dataSource.createQueryRunner();
    try {
      const { affected } = await runner.query(sql, parameters, true);
      if ((affected ?? 0) > 0) return true;
      if (attempt === 1) return false;
      // Nothing matched on a retry: the first attempt may have landed before its connection
      // was lost (a session's guard has then moved on). It did if the row holds exactly the
      // envelopes we wrote: each has a fresh random IV, so no other write can be equal.
      const columns = rewrites.map(([column]) => e(column)).join(', ');
      const [current] = (await runner.query(
        `SELECT ${columns} FROM ${e(spec.table)} WHERE ${e(spec.key)} = ${param(0)}`,
        [row[spec.key]],
      )) as Array<Record<string, unknown>>;
      return (
        current !== undefined &&
        rewrites.every(([column, envelope]) => storedEnvelope(current[column]) === envelope)
      );
    } finally {
      await runner.release();
    }
  });
}

/**
 * The envelope held by a raw secret column. Drivers return a `json` column either parsed
 * (pg; mysql2 when the server labels the column JSON: a JS string) or as its JSON text
 * (better-sqlite3, MySQL servers that store JSON as LONGTEXT: `"v1.…"` with quotes). An
 * envelope never starts with a quote, so the two cannot be confused. `undefined` when the
 * column holds something else.
 */
function storedEnvelope(raw: unknown): string | undefined {
  const value = Buffer.isBuffer(raw) ? raw.toString('utf8') : raw;
  if (typeof value !== 'string') return undefined;
  if (!value.startsWith('"')) return value;
  try {
    const parsed: unknown = JSON.parse(value);
    return typeof parsed === 'string' ? parsed : undefined;
  } catch {
    return undefined;
  }
}
