/**
 * Cleanup of native codes and refresh families over more rows than one statement may bind:
 * keys are deleted in statements of at most 10,000, batches stop at `batchSize`, and rows
 * that have not ended stay.
 */
import type { DataSource, Logger } from 'typeorm';
import { TypeOrmNativeStore } from '../../lib/storage/typeorm/typeorm-native.store.js';
import { type Dialect, DIALECTS, migratedDataSource } from '../support/databases.js';

const MINUTE = 60_000;
const MAX_KEYS = 10_000;
/** Parameters a cleanup statement binds besides its keys (its cutoffs). */
const OTHER_PARAMETERS = 2;
const ROWS = 20_500;
const LIVE = 20;

/** Records the bind-parameter count of every statement run. */
class CountingLogger implements Logger {
  readonly counts: number[] = [];
  logQuery(_query: string, parameters?: unknown[]): void {
    this.counts.push(parameters?.length ?? 0);
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

/** One statement inserting rows n = 1..count into `table`, from expressions of `n`. */
function insertSeries(
  dialect: Dialect,
  table: string,
  columns: string[],
  values: string[],
  count: number,
) {
  const q = (id: string) => (dialect === 'mariadb' ? `\`${id}\`` : `"${id}"`);
  const cols = `(${columns.map(q).join(', ')})`;
  const select = values.join(', ');
  if (dialect === 'sqlite') {
    return (
      `WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ${count}) ` +
      `INSERT INTO ${q(table)} ${cols} SELECT ${select} FROM s`
    );
  }
  const series =
    dialect === 'postgres'
      ? `generate_series(1, ${count}) AS s(n)`
      : `(SELECT seq AS n FROM seq_1_to_${count}) AS s`;
  return `INSERT INTO ${q(table)} ${cols} SELECT ${select} FROM ${series}`;
}

describe.each(DIALECTS)('native cleanup batches on %s', (dialect) => {
  let ds: DataSource;
  let close: (() => Promise<void>) | undefined;
  const logger = new CountingLogger();
  const now = Date.now();
  const cutoffs = { now, revokedBefore: now - 60 * MINUTE };
  const id = (prefix: string) =>
    dialect === 'mariadb' ? `CONCAT('${prefix}-', n)` : `'${prefix}-' || n`;

  beforeAll(async () => {
    ({ dataSource: ds, close } = await migratedDataSource(dialect, 'native_cleanup', { logger }));
  }, 120_000);
  afterAll(async () => {
    await close?.();
  });

  async function count(table: string): Promise<number> {
    const [row] = (await ds.query(`SELECT COUNT(*) AS n FROM ${table}`)) as Array<{ n: unknown }>;
    return Number(row?.n);
  }

  it('deletes expired codes: 20,000 in statements of at most 10,000 keys, then the rest, live ones kept', async () => {
    const columns = [
      'id',
      'did',
      'redirect_uri',
      'code_challenge',
      'created_at',
      'expires_at',
      'used_at',
    ];
    const row = (prefix: string, expiresAt: number) => [
      id(prefix),
      `'did:web:native.example'`,
      `'com.example.app:/cb'`,
      `'challenge'`,
      `${now - MINUTE}`,
      `${expiresAt}`,
      'NULL',
    ];
    await ds.query(
      insertSeries(dialect, 'atproto_native_code', columns, row('old', now - 1000), ROWS),
    );
    await ds.query(
      insertSeries(dialect, 'atproto_native_code', columns, row('live', now + MINUTE), LIVE),
    );
    const store = new TypeOrmNativeStore(ds);
    logger.counts.length = 0;
    expect(await store.deleteExpiredCodes(now, 2 * MAX_KEYS)).toBe(2 * MAX_KEYS);
    expect(Math.max(...logger.counts)).toBeLessThanOrEqual(MAX_KEYS + OTHER_PARAMETERS);
    expect(await store.deleteExpiredCodes(now, MAX_KEYS)).toBe(ROWS - 2 * MAX_KEYS);
    expect(await store.deleteExpiredCodes(now, MAX_KEYS)).toBe(0);
    expect(await count('atproto_native_code')).toBe(LIVE);
  }, 120_000);

  it('deletes ended families (expired, revoked, orphaned) the same way, live ones kept', async () => {
    const columns = [
      'id',
      'did',
      'current_jti',
      'previous_jti',
      'rotated_at',
      'created_at',
      'expires_at',
      'revoked_at',
    ];
    // A third each: expired, revoked before the cutoff, without an app session.
    const ended = [
      id('old'),
      `'did:web:native.example'`,
      `'jti'`,
      'NULL',
      `${now - MINUTE}`,
      `${now - MINUTE}`,
      `CASE WHEN n % 3 = 0 THEN ${now - 1000} ELSE ${now + MINUTE} END`,
      `CASE WHEN n % 3 = 1 THEN ${now - 2 * 60 * MINUTE} ELSE NULL END`,
    ];
    await ds.query(insertSeries(dialect, 'atproto_native_refresh_family', columns, ended, ROWS));
    const live = [
      id('live'),
      `'did:web:native.example'`,
      `'jti'`,
      'NULL',
      `${now}`,
      `${now}`,
      `${now + MINUTE}`,
      'NULL',
    ];
    await ds.query(insertSeries(dialect, 'atproto_native_refresh_family', columns, live, LIVE));
    await ds.query(
      insertSeries(
        dialect,
        'atproto_app_session',
        ['id', 'did', 'created_at', 'expires_at', 'last_seen_at'],
        [id('live'), `'did:web:native.example'`, `${now}`, `${now + MINUTE}`, `${now}`],
        LIVE,
      ),
    );
    const store = new TypeOrmNativeStore(ds);
    logger.counts.length = 0;
    expect(await store.deleteEndedFamilies(cutoffs, 2 * MAX_KEYS)).toBe(2 * MAX_KEYS);
    expect(Math.max(...logger.counts)).toBeLessThanOrEqual(MAX_KEYS + OTHER_PARAMETERS);
    expect(await store.deleteEndedFamilies(cutoffs, MAX_KEYS)).toBe(ROWS - 2 * MAX_KEYS);
    expect(await store.deleteEndedFamilies(cutoffs, MAX_KEYS)).toBe(0);
    expect(await count('atproto_native_refresh_family')).toBe(LIVE);
  }, 120_000);
});
