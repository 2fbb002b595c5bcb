/**
 * What one cleanup run asks of the database grows with its batches and with the OAuth
 * sessions it revokes, not with the number of DIDs whose app sessions it deletes: the
 * "does this DID still have an OAuth session?" question is asked once per batch for all of
 * the batch's DIDs, on SQLite, PostgreSQL and MariaDB, through the module's public
 * `runOnce()`. The run stays correct: every ended app session goes, exactly the unused OAuth
 * sessions are revoked (their authorization server is unreachable: the module deletes them
 * here anyway), and those in use by an active app session or an active API key stay.
 */
import { type INestApplicationContext, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { DataSource, Logger } from 'typeorm';
import {
  AT_PROTO_SESSION_STORE,
  AtProtoCleanupService,
  AtProtoModule,
  atProtoEntities,
} from 'nestjs-atproto-auth';
import type { CleanupTarget } from '../../lib/cleanup/cleanup.interface.js';
import { CleanupRunner, DEFAULT_REVOKE_CONCURRENCY } from '../../lib/cleanup/cleanup.service.js';
import { TypeOrmCleanupTarget } from '../../lib/cleanup/typeorm-cleanup.target.js';
import type { AtProtoSessionStore } from '../../lib/storage/store.interface.js';
import { type Dialect, DIALECTS, migratedDataSource } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import { sessionValue } from '../support/raw-sql.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** DIDs whose app sessions all ended, two each. */
const DIDS = 600;
const BATCH = 200;
/** The first of them have an OAuth session: in use by an active app session… */
const WITH_ACTIVE_SESSION = 10;
/** …or by an active API key… */
const WITH_KEY = 5;
/** …or by nothing: revoked by the run. */
const UNUSED = 15;

class CountingLogger implements Logger {
  statements = 0;
  logQuery(): void {
    this.statements++;
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

const didOf = (i: number) => `did:web:cleanup-${i}.example`;

describe.each(DIALECTS)('cleanup statements on %s', (dialect: Dialect) => {
  let close: (() => Promise<void>) | undefined;
  let ds: DataSource;
  let app: INestApplicationContext;
  const logger = new CountingLogger();

  beforeAll(async () => {
    const db = await migratedDataSource(dialect, 'cleanup_statements');
    ds = db.dataSource;
    close = db.close;
    @Module({
      imports: [
        TypeOrmModule.forRoot({
          ...db.options,
          entities: [...atProtoEntities],
          logger,
        } as never),
        AtProtoModule.forRoot({
          publicUrl: 'http://127.0.0.1:3999',
          encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
          cleanup: { enabled: false, batchSize: BATCH },
        }),
      ],
    })
    class CleanupStatementsModule {}
    app = await NestFactory.createApplicationContext(CleanupStatementsModule, {
      logger: false,
    });
  }, 120_000);
  afterAll(async () => {
    await app?.close();
    await close?.();
  });

  it('asks per batch, not per DID, and revokes exactly the unused OAuth sessions', async () => {
    const now = Date.now();
    const rows: string[] = [];
    for (let i = 0; i < DIDS; i++) {
      // One past its absolute expiry, one idle for longer than the idle lifetime.
      rows.push(`('e-${i}', '${didOf(i)}', ${now - 40 * DAY}, ${now - 1000}, ${now - HOUR}, NULL)`);
      rows.push(
        `('i-${i}', '${didOf(i)}', ${now - 40 * DAY}, ${now + DAY}, ${now - 30 * DAY}, NULL)`,
      );
    }
    for (let i = 0; i < WITH_ACTIVE_SESSION; i++) {
      rows.push(`('a-${i}', '${didOf(i)}', ${now - DAY}, ${now + DAY}, ${now - HOUR}, NULL)`);
    }
    for (let i = 0; i < rows.length; i += 500) {
      await ds.query(
        `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at) VALUES ${rows.slice(i, i + 500).join(', ')}`,
      );
    }
    for (let i = WITH_ACTIVE_SESSION; i < WITH_ACTIVE_SESSION + WITH_KEY; i++) {
      await ds.query(
        `INSERT INTO atproto_api_key (id, did, name, display_prefix, created_at) VALUES ('k-${i}', '${didOf(i)}', 'bot', 'atp_test', ${now - DAY})`,
      );
    }
    const store = app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    const withSession = WITH_ACTIVE_SESSION + WITH_KEY + UNUSED;
    for (let i = 0; i < withSession; i++) {
      const value = sessionValue(didOf(i));
      // Nothing listens there: the revocation fails at the network, at once.
      value.tokenSet.iss = 'http://127.0.0.1:1';
      await store.set(didOf(i), value);
    }

    logger.statements = 0;
    // The run begins after the OAuth sessions were written (one written later counts as a
    // new login and is kept).
    const result = await app.get(AtProtoCleanupService).runOnce(Date.now() + 1);

    expect(result.appSessions).toBe(2 * DIDS);
    expect(result.oauthSessionsRevoked).toBe(UNUSED);
    for (let i = 0; i < withSession; i++) {
      expect(await store.get(didOf(i))).toEqual(
        i < WITH_ACTIVE_SESSION + WITH_KEY ? expect.anything() : undefined,
      );
    }
    const [left] = (await ds.query('SELECT COUNT(*) AS n FROM atproto_app_session')) as Array<{
      n: unknown;
    }>;
    expect(Number(left?.n)).toBe(WITH_ACTIVE_SESSION);
    // A few statements per batch (select, delete, the in-use and OAuth-session questions for
    // the batch's DIDs), a bounded number per revocation (the lock's re-check, the read, the
    // delete), a few for the other tables and the final pass; none per DID.
    const batches = Math.ceil((2 * DIDS) / BATCH) + 1;
    expect(logger.statements).toBeLessThanOrEqual(8 * batches + 12 * UNUSED + 30);
  }, 120_000);

  it('revokes several DIDs at once (each under its own lock), at most revokeConcurrency', async () => {
    const now = Date.now();
    const store = app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    const dids = Array.from({ length: 12 }, (_, i) => `did:web:concurrent-${i}.example`);
    for (const did of dids) {
      await ds.query(
        `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at) VALUES ('c-${did}', '${did}', ${now - 40 * DAY}, ${now - 1000}, ${now - HOUR}, NULL)`,
      );
      await store.set(did, sessionValue(did));
    }
    const target = new TypeOrmCleanupTarget(ds);
    let inFlight = 0;
    let most = 0;
    const revoked: string[] = [];
    // Stands in for the authorization server's round trip: each revocation stays in flight
    // until the event loop has turned, so that the ones started together are seen together.
    const auth = {
      revoke: async (did: string, ifUnused: { since: Date; inUse: () => Promise<boolean> }) => {
        inFlight++;
        most = Math.max(most, inFlight);
        try {
          await new Promise((resolve) => setImmediate(resolve));
          if (await ifUnused.inUse()) return false;
          await store.del(did);
          revoked.push(did);
          return true;
        } finally {
          inFlight--;
        }
      },
    };
    const runner = new CleanupRunner(
      target,
      auth,
      async (did) => (await store.get(did)) !== undefined,
      { batchSize: 100, appSessionIdleTtlMs: 7 * DAY, revokedGraceMs: DAY },
      { oauthSessionsAmong: (d, n) => target.didsWithOAuthSession(d, n) },
    );
    const result = await runner.run(Date.now() + 1);
    expect(result.oauthSessionsRevoked).toBe(dids.length);
    expect([...revoked].sort()).toEqual([...dids].sort());
    expect(most).toBe(DEFAULT_REVOKE_CONCURRENCY);
  }, 120_000);

  /** The TypeORM target, counting the batches of ended app sessions it is asked for. */
  function countingTarget(): { target: CleanupTarget; deletes: () => number } {
    const real = new TypeOrmCleanupTarget(ds);
    let deletes = 0;
    const target: CleanupTarget = {
      deleteExpiredStates: (n, b) => real.deleteExpiredStates(n, b),
      deleteExpiredOAuthSessions: (n, b) => real.deleteExpiredOAuthSessions(n, b),
      deleteEndedAppSessions: (c, b) => {
        deletes++;
        return real.deleteEndedAppSessions(c, b);
      },
      didsWithoutActiveAppSession: (d, c) => real.didsWithoutActiveAppSession(d, c),
      didsWithOAuthSession: (d, n) => real.didsWithOAuthSession(d, n),
      isInUse: (d, c) => real.isInUse(d, c),
      oauthSessionsWithoutActiveAppSession: (c, a, l) =>
        real.oauthSessionsWithoutActiveAppSession(c, a, l),
      deleteEndedApiKeys: (c, b) => real.deleteEndedApiKeys(c, b),
    };
    return { target, deletes: () => deletes };
  }

  /** `count` DIDs with one ended app session each; the first `withSession` have an OAuth session. */
  async function seedEnded(prefix: string, count: number, withSession: number) {
    const now = Date.now();
    const store = app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    const dids = Array.from({ length: count }, (_, i) => `did:web:${prefix}-${i}.example`);
    await ds.query(
      `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at) VALUES ${dids
        .map(
          (did) =>
            `('${prefix}-${did}', '${did}', ${now - 40 * DAY}, ${now - 1000}, ${now - HOUR}, NULL)`,
        )
        .join(', ')}`,
    );
    for (const did of dids.slice(0, withSession)) await store.set(did, sessionValue(did));
    return { dids, store };
  }

  const settings = { batchSize: 10, appSessionIdleTtlMs: 7 * DAY, revokedGraceMs: DAY };

  it('deletes the next batch while the revocations of the previous one are in flight', async () => {
    const { dids, store } = await seedEnded('overlap', 30, 2);
    const { target, deletes } = countingTarget();
    const overlapped: boolean[] = [];
    const auth = {
      revoke: async (did: string, ifUnused: { since: Date; inUse: () => Promise<boolean> }) => {
        const before = deletes();
        // Waits for the runner to ask for another batch; a runner that waits for this
        // revocation first never does (given up after a while, so that the test fails
        // rather than hangs).
        for (let turn = 0; turn < 2000 && deletes() === before; turn++) {
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        overlapped.push(deletes() > before);
        if (await ifUnused.inUse()) return false;
        await store.del(did);
        return true;
      },
    };
    const runner = new CleanupRunner(target, auth, async () => true, settings, {
      oauthSessionsAmong: (d, n) => target.didsWithOAuthSession(d, n),
    });
    const result = await runner.run(Date.now() + 1);
    expect(result.appSessions).toBe(dids.length);
    expect(result.oauthSessionsRevoked).toBe(2);
    expect(overlapped).toEqual([true, true]);
  }, 120_000);

  it('deletes no further batch while earlier candidates wait for a free revocation slot', async () => {
    const { dids, store } = await seedEnded('paced', 30, 30);
    const { target, deletes } = countingTarget();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started = 0;
    const auth = {
      revoke: async (did: string) => {
        started++;
        await released;
        await store.del(did);
        return true;
      },
    };
    const runner = new CleanupRunner(target, auth, async () => true, settings, {
      oauthSessionsAmong: (d, n) => target.didsWithOAuthSession(d, n),
    });
    const run = runner.run(Date.now() + 1);
    // The first batch's 10 candidates: 8 in flight, 2 waiting. Give the runner every chance
    // to run ahead (database round trips), then look.
    while (started < DEFAULT_REVOKE_CONCURRENCY) await ds.query('SELECT 1');
    for (let i = 0; i < 20; i++) await ds.query('SELECT 1');
    expect(started).toBe(DEFAULT_REVOKE_CONCURRENCY);
    expect(deletes()).toBe(1);
    release();
    const result = await run;
    expect(result.appSessions).toBe(dids.length);
    expect(result.oauthSessionsRevoked).toBe(dids.length);
  }, 120_000);
});
