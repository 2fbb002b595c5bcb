/**
 * Cleanup on big tables: 100,000 expired and 1,000 live rows per table on PostgreSQL and
 * MariaDB. Every expired row goes, every live row stays, in batches; a run interrupted
 * mid-batch leaves consistent tables and the next run finishes the job.
 */
import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import type { CleanupTarget } from '../../lib/cleanup/cleanup.interface.js';
import { CleanupRunner } from '../../lib/cleanup/cleanup.service.js';
import { TypeOrmCleanupTarget } from '../../lib/cleanup/typeorm-cleanup.target.js';
import { createTestDatabase, type Dialect } from '../support/databases.js';

const EXPIRED = 100_000;
const LIVE = 1_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const IDLE = 7 * DAY;
const GRACE = DAY;

/** Fills the three tables with SQL that runs inside the database (no 300k round trips). */
async function seed(ds: DataSource, dialect: Dialect, now: number): Promise<void> {
  const total = EXPIRED + LIVE;
  // n = 1..total; rows with n <= EXPIRED are expired/ended, the rest are live.
  const series =
    dialect === 'postgres'
      ? `generate_series(1, ${total}) AS s(n)`
      : `(SELECT seq AS n FROM seq_1_to_${total}) AS s`;
  const concat = (...parts: string[]) =>
    dialect === 'postgres' ? parts.join(' || ') : `CONCAT(${parts.join(', ')})`;
  const str = (n: string) => (dialect === 'postgres' ? `${n}::text` : n);
  const expired = `n <= ${EXPIRED}`;
  const q = (id: string) => (dialect === 'postgres' ? `"${id}"` : `\`${id}\``);
  const when = (cond: string, a: string, b: string) => `CASE WHEN ${cond} THEN ${a} ELSE ${b} END`;

  await ds.query(
    `INSERT INTO atproto_oauth_state (${q('key')}, ${q('data')}, ${q('created_at')}, ${q('expires_at')})
     SELECT ${concat(`'state-'`, str('n'))}, '"x"', ${now - HOUR},
            ${when(expired, String(now - 1000), String(now + HOUR))} FROM ${series}`,
  );
  await ds.query(
    `INSERT INTO atproto_oauth_session (did, token_set, dpop_key, auth_method, issuer, pds_url,
       access_expires_at, expires_at, created_at, updated_at, version)
     SELECT ${concat(`'did:web:s'`, str('n'), `'.example'`)}, '"x"', '"x"', '{}', 'https://pds.example',
            'https://pds.example', NULL, ${when(expired, String(now - 1000), String(now + DAY))},
            ${now - DAY}, ${now - DAY}, 1 FROM ${series}`,
  );
  // Ended app sessions, a third each: past their absolute expiry, idle too long, revoked
  // before the grace period. Live ones: recent activity, not revoked, or revoked recently.
  await ds.query(
    `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent)
     SELECT ${dialect === 'postgres' ? `md5(n::text) || md5((n + 7)::text)` : `CONCAT(MD5(n), MD5(n + 7))`},
            ${concat(`'did:web:u'`, str(`(n % 997)`), `'.example'`)},
            ${now - 2 * DAY},
            ${when(`${expired} AND n % 3 = 0`, String(now - 1000), String(now + 20 * DAY))},
            ${when(`${expired} AND n % 3 = 1`, String(now - IDLE - 1000), String(now - HOUR))},
            ${when(`${expired} AND n % 3 = 2`, String(now - GRACE - 1000), when(`n % 5 = 0`, String(now - HOUR), 'NULL'))},
            'bench' FROM ${series}`,
  );
}

async function counts(ds: DataSource): Promise<number[]> {
  const out: number[] = [];
  for (const t of ['atproto_oauth_state', 'atproto_oauth_session', 'atproto_app_session']) {
    const [row] = (await ds.query(`SELECT COUNT(*) AS n FROM ${t}`)) as Array<{ n: unknown }>;
    out.push(Number(row?.n));
  }
  return out;
}

/** No DID of the seeded app sessions has an OAuth session. */
const noSession = async () => false;

const noRevocations = {
  revoke: async () => {
    throw new Error('no OAuth session should be revoked in this test');
  },
};

describe.each<Dialect>(['postgres', 'mariadb'])('cleanup of 100k expired rows on %s', (dialect) => {
  let ds: DataSource;
  let drop: () => Promise<void>;
  const now = Date.now();

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'cleanup');
    drop = db.drop;
    ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
    });
    await ds.initialize();
    await ds.runMigrations();
  }, 120_000);
  afterAll(async () => {
    await ds?.destroy();
    await drop?.();
  });

  it('deletes every expired row and keeps every live one, even when interrupted mid-run', async () => {
    await seed(ds, dialect, now);
    expect(await counts(ds)).toEqual([EXPIRED + LIVE, EXPIRED + LIVE, EXPIRED + LIVE]);
    // The seeded OAuth sessions have no app sessions at all (fixtures): the pass that revokes
    // unused OAuth sessions has its own tests (test/e2e/cleanup-revocation.e2e-spec.ts).
    const settings = {
      batchSize: 5_000,
      appSessionIdleTtlMs: IDLE,
      revokedGraceMs: GRACE,
      revokeUnusedOAuthSessions: false,
    };

    // First run: the process "dies" after 7 batches (between two statements).
    const real = new TypeOrmCleanupTarget(ds);
    let batches = 0;
    const dying: CleanupTarget = {
      deleteExpiredStates: async (n, b) => {
        if (++batches > 7) throw new Error('killed');
        return real.deleteExpiredStates(n, b);
      },
      deleteExpiredOAuthSessions: (n, b) => real.deleteExpiredOAuthSessions(n, b),
      deleteEndedAppSessions: (c, b) => real.deleteEndedAppSessions(c, b),
      didsWithoutActiveAppSession: (d, c) => real.didsWithoutActiveAppSession(d, c),
      didsWithOAuthSession: (d, n) => real.didsWithOAuthSession(d, n),
      isInUse: (d, c) => real.isInUse(d, c),
      oauthSessionsWithoutActiveAppSession: (c, a, l) =>
        real.oauthSessionsWithoutActiveAppSession(c, a, l),
      deleteEndedApiKeys: (c, b) => real.deleteEndedApiKeys(c, b),
    };
    await expect(
      new CleanupRunner(dying, noRevocations, noSession, settings).run(now),
    ).rejects.toThrow('killed');
    const [statesLeft] = await counts(ds);
    expect(statesLeft).toBe(EXPIRED + LIVE - 7 * 5_000); // whole batches only

    // The next run finishes the job.
    const result = await new CleanupRunner(real, noRevocations, noSession, settings).run(now);
    expect(result).toEqual({
      states: EXPIRED - 7 * 5_000,
      oauthSessions: EXPIRED,
      appSessions: EXPIRED,
      oauthSessionsRevoked: 0,
      apiKeys: 0,
      nativeCodes: 0,
      nativeRefreshFamilies: 0,
      botSessions: 0,
    });
    expect(await counts(ds)).toEqual([LIVE, LIVE, LIVE]);
    const [live] = (await ds.query(
      `SELECT COUNT(*) AS n FROM atproto_oauth_state WHERE expires_at > ${now}`,
    )) as Array<{ n: unknown }>;
    expect(Number(live?.n)).toBe(LIVE);
    // A second run finds nothing.
    expect(await new CleanupRunner(real, noRevocations, noSession, settings).run(now)).toEqual({
      states: 0,
      oauthSessions: 0,
      appSessions: 0,
      oauthSessionsRevoked: 0,
      apiKeys: 0,
      nativeCodes: 0,
      nativeRefreshFamilies: 0,
      botSessions: 0,
    });
  }, 300_000);
});
