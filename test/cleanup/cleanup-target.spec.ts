/**
 * The TypeORM cleanup target on SQLite, PostgreSQL and MariaDB: batches of 10,000 (the
 * largest `cleanup.batchSize`) over more than 10,000 rows, lists of keys longer than one
 * statement may bind (cut into statements of at most 10,000 keys), and the keyset-paginated
 * list of OAuth sessions whose user has no active app session.
 */
import type { DataSource, Logger } from 'typeorm';
import { MemoryAppSessionStore, MemorySessionStore, MemoryStateStore } from 'nestjs-atproto-auth';
import { MemoryCleanupTarget } from '../../lib/cleanup/memory-cleanup.target.js';
import { TypeOrmCleanupTarget } from '../../lib/cleanup/typeorm-cleanup.target.js';
import { type Dialect, DIALECTS, migratedDataSource } from '../support/databases.js';
import { installTestKeyRing } from '../support/key-ring.js';
import { randomDid, sessionValue } from '../support/raw-sql.js';

installTestKeyRing();

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const IDLE = 7 * DAY;
const MAX_KEYS = 10_000;
/** Parameters a cleanup statement binds besides its keys (its cutoffs). */
const OTHER_PARAMETERS = 3;

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

/** Captures the text and parameters of the statements that match `pattern`. */
class CapturingLogger extends CountingLogger {
  readonly captured: Array<{ query: string; parameters: unknown[] }> = [];
  constructor(private readonly pattern: RegExp) {
    super();
  }
  override logQuery(query: string, parameters?: unknown[]): void {
    super.logQuery(query, parameters);
    if (this.pattern.test(query)) this.captured.push({ query, parameters: parameters ?? [] });
  }
}

/** SQL that inserts rows n = from..to, built from expressions of `n`, in one statement. */
function insertSeries(
  dialect: Dialect,
  table: string,
  columns: string[],
  values: (n: string, text: (expr: string) => string) => string[],
  from: number,
  to: number,
): string {
  const q = (id: string) => (dialect === 'mariadb' ? `\`${id}\`` : `"${id}"`);
  const text = (expr: string) =>
    dialect === 'postgres'
      ? `(${expr})::text`
      : dialect === 'mariadb'
        ? `CAST(${expr} AS CHAR)`
        : `(${expr})`;
  const select = values('n', text);
  const cols = `(${columns.map(q).join(', ')})`;
  if (dialect === 'sqlite') {
    return (
      `WITH RECURSIVE s(n) AS (SELECT ${from} UNION ALL SELECT n + 1 FROM s WHERE n < ${to}) ` +
      `INSERT INTO ${q(table)} ${cols} SELECT ${select.join(', ')} FROM s`
    );
  }
  const series =
    dialect === 'postgres'
      ? `generate_series(${from}, ${to}) AS s(n)`
      : `(SELECT seq AS n FROM seq_${from}_to_${to}) AS s`;
  return `INSERT INTO ${q(table)} ${cols} SELECT ${select.join(', ')} FROM ${series}`;
}

function concat(dialect: Dialect, ...parts: string[]): string {
  return dialect === 'mariadb' ? `CONCAT(${parts.join(', ')})` : parts.join(' || ');
}

describe.each(DIALECTS)('TypeORM cleanup target on %s', (dialect) => {
  let ds: DataSource;
  let close: (() => Promise<void>) | undefined;
  const logger = new CapturingLogger(/NOT EXISTS/);
  const now = Date.now();
  const cutoffs = { now, idleBefore: now - IDLE, revokedBefore: now - DAY };

  beforeAll(async () => {
    ({ dataSource: ds, close } = await migratedDataSource(dialect, 'cleanup_target', { logger }));
  }, 120_000);
  afterAll(async () => {
    await close?.();
  });

  /** Expired states, expired OAuth sessions and ended app sessions n = from..to. */
  async function seedExpired(prefix: string, from: number, to: number): Promise<void> {
    const c = (...parts: string[]) => concat(dialect, ...parts);
    await ds.query(
      insertSeries(
        dialect,
        'atproto_oauth_state',
        ['key', 'data', 'created_at', 'expires_at'],
        (n, text) => [c(`'${prefix}-state-'`, text(n)), `'"x"'`, `${now - HOUR}`, `${now - 1000}`],
        from,
        to,
      ),
    );
    await ds.query(
      insertSeries(
        dialect,
        'atproto_oauth_session',
        [
          'did',
          'token_set',
          'dpop_key',
          'auth_method',
          'issuer',
          'pds_url',
          'expires_at',
          'created_at',
          'updated_at',
          'version',
        ],
        (n, text) => [
          c(`'did:web:${prefix}-s'`, text(n), `'.example'`),
          `'"x"'`,
          `'"x"'`,
          `'{}'`,
          `'https://pds.example'`,
          `'https://pds.example'`,
          `${now - 1000}`,
          `${now - DAY}`,
          `${now - DAY}`,
          '1',
        ],
        from,
        to,
      ),
    );
    // Ended app sessions, a third each expired, idle and revoked before the grace period.
    await ds.query(
      insertSeries(
        dialect,
        'atproto_app_session',
        ['id', 'did', 'created_at', 'expires_at', 'last_seen_at', 'revoked_at'],
        (n) => [
          c(`'${prefix}-app-'`, `${n}`),
          c(`'did:web:${prefix}-u'`, `(${n} % 997)`, `'.example'`),
          `${now - 2 * DAY}`,
          `CASE WHEN ${n} % 3 = 0 THEN ${now - 1000} ELSE ${now + DAY} END`,
          `CASE WHEN ${n} % 3 = 1 THEN ${now - IDLE - 1000} ELSE ${now - HOUR} END`,
          `CASE WHEN ${n} % 3 = 2 THEN ${now - DAY - 1000} ELSE NULL END`,
        ],
        from,
        to,
      ),
    );
  }

  /** Live rows that must survive every cleanup here (their app sessions are active). */
  const LIVE = 30;
  async function seedLive(): Promise<string[]> {
    const dids: string[] = [];
    for (let i = 0; i < LIVE; i++) {
      const did = `did:web:live-${i}.example`;
      dids.push(did);
      await ds.query(
        `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at) VALUES ('live-${i}', '${did}', ${now - DAY}, ${now + DAY}, ${now - HOUR})`,
      );
      await ds.query(
        `INSERT INTO atproto_oauth_state (${dialect === 'mariadb' ? '`key`' : '"key"'}, data, created_at, expires_at) VALUES ('live-state-${i}', '"x"', ${now}, ${now + HOUR})`,
      );
    }
    return dids;
  }

  async function count(table: string): Promise<number> {
    const [row] = (await ds.query(`SELECT COUNT(*) AS n FROM ${table}`)) as Array<{ n: unknown }>;
    return Number(row?.n);
  }

  let liveDids: string[];

  it('batchSize 10,000 over 20,500 rows: 10,000, 10,000, 500, then 0, on every table', async () => {
    liveDids = await seedLive();
    await seedExpired('a', 1, 20_500);
    const target = new TypeOrmCleanupTarget(ds);
    const states: number[] = [];
    const sessions: number[] = [];
    const apps: number[] = [];
    const dids = new Set<string>();
    for (let i = 0; i < 4; i++) states.push(await target.deleteExpiredStates(now, MAX_KEYS));
    for (let i = 0; i < 4; i++)
      sessions.push(await target.deleteExpiredOAuthSessions(now, MAX_KEYS));
    for (let i = 0; i < 4; i++) {
      const r = await target.deleteEndedAppSessions(cutoffs, MAX_KEYS);
      apps.push(r.deleted);
      for (const d of r.dids) dids.add(d);
    }
    expect(states).toEqual([10_000, 10_000, 500, 0]);
    expect(sessions).toEqual([10_000, 10_000, 500, 0]);
    expect(apps).toEqual([10_000, 10_000, 500, 0]);
    expect(dids.size).toBe(997);
    expect([
      await count('atproto_oauth_state'),
      await count('atproto_oauth_session'),
      await count('atproto_app_session'),
    ]).toEqual([LIVE, 0, LIVE]);
  }, 120_000);

  it('batchSize 20,000: deletes in statements of at most 10,000 keys', async () => {
    await seedExpired('b', 1, 20_500);
    const target = new TypeOrmCleanupTarget(ds);
    logger.counts.length = 0;
    expect(await target.deleteExpiredStates(now, 20_000)).toBe(20_000);
    expect(await target.deleteExpiredOAuthSessions(now, 20_000)).toBe(20_000);
    expect((await target.deleteEndedAppSessions(cutoffs, 20_000)).deleted).toBe(20_000);
    expect(Math.max(...logger.counts)).toBeLessThanOrEqual(MAX_KEYS + OTHER_PARAMETERS);
    expect(await target.deleteExpiredStates(now, 20_000)).toBe(500);
    expect(await target.deleteExpiredOAuthSessions(now, 20_000)).toBe(500);
    expect((await target.deleteEndedAppSessions(cutoffs, 20_000)).deleted).toBe(500);
    expect(await count('atproto_oauth_state')).toBe(LIVE);
  }, 120_000);

  it('didsWithoutActiveAppSession over 70,000 DIDs (past every driver limit) keeps the active ones out', async () => {
    const others = Array.from({ length: 70_000 - LIVE }, (_, i) => `did:web:gone-${i}.example`);
    const dids = [...others.slice(0, 35_000), ...liveDids, ...others.slice(35_000)];
    logger.counts.length = 0;
    const target = new TypeOrmCleanupTarget(ds);
    const without = await target.didsWithoutActiveAppSession(dids, cutoffs);
    expect(without).toEqual(others);
    expect(Math.max(...logger.counts)).toBeLessThanOrEqual(MAX_KEYS + OTHER_PARAMETERS);
  }, 120_000);

  it('didsWithOAuthSession over 25,000 DIDs: those with an OAuth session not past its retention, in statements of at most 10,000 keys', async () => {
    await ds.query('DELETE FROM atproto_oauth_session');
    const insert = (did: string, expiresAt: number) =>
      ds.query(
        `INSERT INTO atproto_oauth_session (did, token_set, dpop_key, auth_method, issuer, pds_url, expires_at, created_at, updated_at, version) VALUES ('${did}', '"x"', '"x"', '{}', 'https://pds.example', 'https://pds.example', ${expiresAt}, ${now - DAY}, ${now - DAY}, 1)`,
      );
    const dids = Array.from({ length: 25_000 }, (_, i) => `did:web:o${i}.example`);
    const withSession = [dids[3]!, dids[12_345]!, dids[24_999]!];
    for (const did of withSession) await insert(did, now + DAY);
    await insert(dids[20_000]!, now - 1); // past its retention: as if gone
    logger.counts.length = 0;
    const target = new TypeOrmCleanupTarget(ds);
    expect(await target.didsWithOAuthSession(dids, now)).toEqual(withSession);
    expect(logger.counts.length).toBe(3);
    expect(Math.max(...logger.counts)).toBeLessThanOrEqual(MAX_KEYS + 1);
    expect(await target.didsWithOAuthSession([], now)).toEqual([]);
  }, 120_000);

  it('isInUse: an active app session or an active API key, nothing ended', async () => {
    const target = new TypeOrmCleanupTarget(ds);
    let n = 0;
    const app = (did: string, a: { expiresAt?: number; lastSeenAt?: number; revokedAt?: number }) =>
      ds.query(
        `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at) VALUES ('use-${n++}', '${did}', ${now - DAY}, ${a.expiresAt ?? now + DAY}, ${a.lastSeenAt ?? now - HOUR}, ${a.revokedAt ?? 'NULL'})`,
      );
    const key = (did: string, a: { expiresAt?: number; revokedAt?: number }) =>
      ds.query(
        `INSERT INTO atproto_api_key (id, did, name, display_prefix, created_at, expires_at, revoked_at) VALUES ('use-${n++}', '${did}', 'bot', 'atp_test', ${now - DAY}, ${a.expiresAt ?? 'NULL'}, ${a.revokedAt ?? 'NULL'})`,
      );
    const ended = randomDid();
    await app(ended, { revokedAt: now - HOUR });
    await app(ended, { expiresAt: now - 1 });
    await app(ended, { lastSeenAt: now - IDLE - 1 });
    await key(ended, { revokedAt: now - HOUR });
    await key(ended, { expiresAt: now - 1 });
    const session = randomDid();
    await app(session, { revokedAt: now - HOUR });
    await app(session, {});
    await app(session, {});
    const keyForever = randomDid();
    await key(keyForever, {});
    const keyUntil = randomDid();
    await key(keyUntil, { expiresAt: now + HOUR });
    expect(await target.isInUse(randomDid(), cutoffs)).toBe(false);
    expect(await target.isInUse(ended, cutoffs)).toBe(false);
    expect(await target.isInUse(session, cutoffs)).toBe(true);
    expect(await target.isInUse(keyForever, cutoffs)).toBe(true);
    expect(await target.isInUse(keyUntil, cutoffs)).toBe(true);
    // The same answers as the list form, for each.
    for (const did of [ended, session, keyForever, keyUntil]) {
      expect((await target.didsWithoutActiveAppSession([did], cutoffs)).length === 0).toBe(
        await target.isInUse(did, cutoffs),
      );
    }
  });

  it('oauthSessionsWithoutActiveAppSession pages through exactly the OAuth sessions whose user has no active app session', async () => {
    for (const t of ['atproto_app_session', 'atproto_oauth_session', 'atproto_oauth_state']) {
      await ds.query(`DELETE FROM ${t}`);
    }
    const target = new TypeOrmCleanupTarget(ds);
    expect(await target.oauthSessionsWithoutActiveAppSession(cutoffs, undefined, 10)).toEqual([]);

    const insertSession = async (did: string) =>
      ds.query(
        `INSERT INTO atproto_oauth_session (did, token_set, dpop_key, auth_method, issuer, pds_url, expires_at, created_at, updated_at, version) VALUES ('${did}', '"x"', '"x"', '{}', 'https://pds.example', 'https://pds.example', ${now + DAY}, ${now}, ${now}, 1)`,
      );
    let n = 0;
    const insertApp = async (
      did: string,
      a: { expiresAt?: number; lastSeenAt?: number; revokedAt?: number } = {},
    ) =>
      ds.query(
        `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at) VALUES ('app-${n++}', '${did}', ${now - DAY}, ${a.expiresAt ?? now + DAY}, ${a.lastSeenAt ?? now - HOUR}, ${a.revokedAt ?? 'NULL'})`,
      );

    const expected: string[] = [];
    const kept: string[] = [];
    for (let i = 0; i < 7; i++) {
      // No app session at all, or only ended ones (revoked, expired, idle): listed.
      const none = randomDid();
      await insertSession(none);
      const revoked = randomDid();
      await insertSession(revoked);
      await insertApp(revoked, { revokedAt: now - HOUR });
      const expired = randomDid();
      await insertSession(expired);
      await insertApp(expired, { expiresAt: now - 1 });
      const idle = randomDid();
      await insertSession(idle);
      await insertApp(idle, { lastSeenAt: now - IDLE - 1 });
      expected.push(none, revoked, expired, idle);
      // One active app session among ended ones: not listed.
      const active = randomDid();
      await insertSession(active);
      await insertApp(active, { revokedAt: now - HOUR });
      await insertApp(active);
      kept.push(active);
    }
    // An app session with no OAuth session is not listed either (nothing to revoke).
    await insertApp(randomDid(), { revokedAt: now - HOUR });

    const seen: string[] = [];
    let after: string | undefined;
    for (let page = 0; page < 100; page++) {
      const dids = await target.oauthSessionsWithoutActiveAppSession(cutoffs, after, 3);
      expect(dids.length).toBeLessThanOrEqual(3);
      if (dids.length === 0) break;
      seen.push(...dids);
      after = dids[dids.length - 1];
    }
    expect([...seen].sort()).toEqual([...expected].sort());
    expect(new Set(seen).size).toBe(seen.length);
    // One page with a large limit is the same list in the same order.
    expect(await target.oauthSessionsWithoutActiveAppSession(cutoffs, undefined, 1000)).toEqual(
      seen,
    );
    for (const did of kept) expect(seen).not.toContain(did);
  });

  if (dialect === 'postgres') {
    it('oauthSessionsWithoutActiveAppSession is one statement per page, probing the app-session did index (EXPLAIN)', async () => {
      await seedExpired('c', 1, 20_000);
      // Give every seeded OAuth session's user app sessions too, so that both sides are big.
      await ds.query(
        `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at) SELECT 'x' || did, did, ${now - DAY}, ${now + DAY}, ${now - HOUR} FROM atproto_oauth_session`,
      );
      await ds.query('ANALYZE');
      logger.captured.length = 0;
      const target = new TypeOrmCleanupTarget(ds);
      await target.oauthSessionsWithoutActiveAppSession(cutoffs, 'did:web:c-s1', 100);
      expect(logger.captured).toHaveLength(1);
      const { query, parameters } = logger.captured[0]!;
      const plan = (
        (await ds.query(`EXPLAIN ${query}`, parameters)) as Array<{ 'QUERY PLAN': string }>
      )
        .map((r) => r['QUERY PLAN'])
        .join('\n');
      expect(plan).toMatch(/IDX_atproto_app_session_did/);
      expect(plan).toMatch(/Anti Join/);
      expect(plan).not.toMatch(/Seq Scan on atproto_app_session/);
    });
  }
});

describe('memory cleanup target: oauthSessionsWithoutActiveAppSession', () => {
  it('pages through the DIDs with an OAuth session and no active app session, in order', async () => {
    const now = Date.now();
    const sessions = new MemorySessionStore({ ttlMs: DAY, now: () => now });
    const apps = new MemoryAppSessionStore();
    const target = new MemoryCleanupTarget(new MemoryStateStore({ ttlMs: HOUR }), sessions, apps);
    const expected: string[] = [];
    for (let i = 0; i < 10; i++) {
      const did = randomDid();
      await sessions.set(did, sessionValue(did));
      const active = i % 2 === 0;
      await apps.create({
        id: `${i}`.padStart(64, '0'),
        did,
        createdAt: new Date(now - DAY),
        expiresAt: new Date(now + DAY),
        lastSeenAt: new Date(active ? now - HOUR : now - IDLE - 1),
        revokedAt: null,
        userAgent: null,
      });
      if (!active) expected.push(did);
    }
    const cutoffs = { now, idleBefore: now - IDLE };
    const first = await target.oauthSessionsWithoutActiveAppSession(cutoffs, undefined, 3);
    const rest = await target.oauthSessionsWithoutActiveAppSession(cutoffs, first.at(-1), 100);
    expect([...first, ...rest]).toEqual([...expected].sort());
    expect(first).toHaveLength(3);
  });
});
