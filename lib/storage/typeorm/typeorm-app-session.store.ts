import { type DataSource, IsNull, type Repository } from 'typeorm';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import { AtProtoAppSessionEntity } from '../entities/app-session.entity.js';
import { epochMillis } from '../entities/columns.js';
import type { AppSessionRecord, AppSessionStore } from '../store.interface.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { assertValidDid } from '../validation.js';
import { onPrimary } from './primary.js';
import { isUniqueViolation } from './upsert.js';

const SESSION_ID = /^[0-9a-f]{64}$/;

/**
 * App session store on TypeORM. Reads go to the primary (see `onPrimary`): a revoked
 * session must never be served from a lagging replica.
 *
 * Writes are retried after transient failures, and a lost connection leaves it unknown
 * whether the first attempt landed. Each write is made to give the same answer either way:
 * `touch` is idempotent; `create` accepts the duplicate key of its own retried insert;
 * `revoke` and `revokeAllForDid` count what carries their own timestamp.
 * @publicApi
 */
export class TypeOrmAppSessionStore implements AppSessionStore {
  readonly #dataSource: DataSource;
  readonly #repo: Repository<AtProtoAppSessionEntity>;
  readonly #retry: TransientRetryOptions | undefined;
  /** The primary-key read's SQL, built on first use (see {@link #read}). */
  #selectById: string | undefined;

  constructor(dataSource: DataSource, options: { retry?: TransientRetryOptions } = {}) {
    this.#dataSource = dataSource;
    this.#repo = dataSource.getRepository(AtProtoAppSessionEntity);
    this.#retry = options.retry;
  }

  async create(record: AppSessionRecord): Promise<void> {
    assertValidDid(record.did);
    assertSessionId(record.id);
    let attempt = 0;
    await withTransientRetry(
      'Creating an app session',
      async () => {
        attempt++;
        try {
          await this.#repo.insert({
            ...record,
            userAgent: record.userAgent?.slice(0, 512) ?? null,
          });
        } catch (error) {
          if (!isUniqueViolation(error)) throw error;
          // A retry after a lost connection whose first attempt committed hits our own row:
          // that is success. The id is the SHA-256 of a fresh random token, so a row with it,
          // our DID and our creation time is the one we wrote; anything else is not ours.
          if (attempt > 1) {
            const stored = await this.#read(record.id);
            if (
              stored?.did === record.did &&
              stored.createdAt.getTime() === record.createdAt.getTime()
            ) {
              return;
            }
          }
          throw new AtProtoStoreError(
            'An app session with this id already exists: ids are the SHA-256 of a fresh random ' +
              'token, so the token was reused or the row was written by someone else.',
            { cause: error },
          );
        }
      },
      this.#retry,
    );
  }

  async get(id: string): Promise<AppSessionRecord | undefined> {
    if (!SESSION_ID.test(id)) return undefined;
    return withTransientRetry('Reading an app session', () => this.#read(id), this.#retry);
  }

  async touch(id: string, at: Date): Promise<void> {
    assertSessionId(id);
    await withTransientRetry(
      'Updating an app session',
      () => this.#repo.update({ id }, { lastSeenAt: at }),
      this.#retry,
    );
  }

  async revoke(id: string, at: Date): Promise<boolean> {
    assertSessionId(id);
    let attempt = 0;
    return withTransientRetry(
      'Revoking an app session',
      async () => {
        attempt++;
        const result = await this.#repo.update({ id, revokedAt: IsNull() }, { revokedAt: at });
        if ((result.affected ?? 0) > 0) return true;
        // Nothing updated on a retry: the first attempt may have landed before its connection
        // was lost. A session revoked at exactly our instant is taken as revoked by us (a
        // concurrent revocation in the same millisecond would be too: it ended the same way).
        if (attempt === 1) return false;
        return (await this.#read(id))?.revokedAt?.getTime() === at.getTime();
      },
      this.#retry,
    );
  }

  async revokeAllForDid(did: string, at: Date): Promise<number> {
    assertValidDid(did);
    let attempt = 0;
    return withTransientRetry(
      'Revoking app sessions',
      async () => {
        attempt++;
        const result = await this.#repo.update({ did, revokedAt: IsNull() }, { revokedAt: at });
        if (attempt === 1) return result.affected ?? 0;
        // On a retry, the first attempt may have revoked some or all of them: count every
        // session of this DID that carries our instant.
        return onPrimary(this.#dataSource, (m) =>
          m.countBy(AtProtoAppSessionEntity, { did, revokedAt: at }),
        );
      },
      this.#retry,
    );
  }

  async listForDid(did: string): Promise<AppSessionRecord[]> {
    assertValidDid(did);
    const rows = await withTransientRetry(
      'Listing app sessions',
      () =>
        onPrimary(this.#dataSource, (m) =>
          m.find(AtProtoAppSessionEntity, {
            where: { did, revokedAt: IsNull() },
            order: { createdAt: 'DESC' },
          }),
        ),
      this.#retry,
    );
    return rows.map(toRecord);
  }

  async revokedSince(
    since: Date,
    limit: number,
  ): Promise<Array<{ id: string; did: string; revokedAt: Date }>> {
    const q = (column: string) => this.#dataSource.driver.escape(column);
    // A range scan of IDX_atproto_app_session_revoked_at: the rows revoked in the last
    // moments, not the table.
    const rows = await withTransientRetry(
      'Reading recently revoked app sessions',
      () =>
        onPrimary(this.#dataSource, (m) =>
          this.#repo
            .createQueryBuilder(undefined, m.queryRunner)
            .select(q('id'), 'id')
            .addSelect(q('did'), 'did')
            .addSelect(q('revoked_at'), 'revokedAt')
            .where(`${q('revoked_at')} > :since`, { since: since.getTime() })
            .orderBy(q('revoked_at'), 'ASC')
            .limit(limit)
            .getRawMany<{ id: string; did: string; revokedAt: string | number }>(),
        ),
      this.#retry,
    );
    return rows.map((r) => ({ id: r.id, did: r.did, revokedAt: new Date(Number(r.revokedAt)) }));
  }

  /**
   * The row with primary key `id`, on the primary.
   *
   * Why not `findOne`: this is the read behind every app-session cache miss (the first
   * request of a session on an instance), and TypeORM's entity path (a query builder built
   * per call, its SQL generated again, entity hydration through the column metadata) costs
   * more than the query itself (docs/benchmarks.md, "Cache miss and session restore"). The
   * statement is built once by the same query builder (table path, quoting and parameter
   * syntax of the driver), run through the query runner (the primary's pool, TypeORM's
   * logger), and its row mapped here as the entity's transformers would: instants through
   * `epochMillis`, nulls kept. Parametrised, not a named prepared statement: those break
   * behind a transaction-mode pooler (PgBouncer) and after a column change.
   */
  async #read(id: string): Promise<AppSessionRecord | undefined> {
    const sql = (this.#selectById ??= this.#buildSelectById());
    const rows = await onPrimary(this.#dataSource, (m) => m.query<RawAppSessionRow[]>(sql, [id]));
    const row = rows[0];
    return row ? fromRaw(row) : undefined;
  }

  #buildSelectById(): string {
    const q = (name: string) => this.#dataSource.driver.escape(name);
    const column = (name: string) => `${q('s')}.${q(name)}`;
    const [[first, firstAlias], ...rest] = RAW_COLUMNS;
    const qb = this.#repo.createQueryBuilder('s').select(column(first), firstAlias);
    for (const [name, alias] of rest) qb.addSelect(column(name), alias);
    const [sql] = qb.where(`${column('id')} = :id`, { id: '' }).getQueryAndParameters();
    return sql;
  }
}

function assertSessionId(id: string): void {
  if (!SESSION_ID.test(id)) {
    throw new AtProtoStoreError(
      'An app session id is the SHA-256 of its token in lowercase hex (64 characters).',
    );
  }
}

/** The columns read, and the alias each comes back under. */
const RAW_COLUMNS = [
  ['id', 'id'],
  ['did', 'did'],
  ['created_at', 'createdAt'],
  ['expires_at', 'expiresAt'],
  ['last_seen_at', 'lastSeenAt'],
  ['revoked_at', 'revokedAt'],
  ['user_agent', 'userAgent'],
] as const;

/** A row as the drivers hand it back: `bigint` as a string (pg, mysql2) or a number (SQLite). */
interface RawAppSessionRow {
  id: string;
  did: string;
  createdAt: string | number;
  expiresAt: string | number;
  lastSeenAt: string | number;
  revokedAt: string | number | null;
  userAgent: string | null;
}

function fromRaw(row: RawAppSessionRow): AppSessionRecord {
  // The entity's transformer, so that both paths map a value the same way.
  const instant = (value: string | number) => epochMillis.from(value) as Date;
  return {
    id: row.id,
    did: row.did,
    createdAt: instant(row.createdAt),
    expiresAt: instant(row.expiresAt),
    lastSeenAt: instant(row.lastSeenAt),
    revokedAt: row.revokedAt === null ? null : instant(row.revokedAt),
    userAgent: row.userAgent,
  };
}

function toRecord(row: AtProtoAppSessionEntity): AppSessionRecord {
  return {
    id: row.id,
    did: row.did,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
    lastSeenAt: row.lastSeenAt,
    revokedAt: row.revokedAt,
    userAgent: row.userAgent,
  };
}
