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
});
