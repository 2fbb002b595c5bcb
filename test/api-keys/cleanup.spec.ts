/**
 * Cleanup and API keys, on the memory backend and on TypeORM over SQLite, PostgreSQL and
 * MariaDB:
 * - an active API key keeps its DID's OAuth session in use: the runner does not revoke it
 *   when the DID's last app session ends (per-batch path), nor in the pass over OAuth
 *   sessions without a user (anti-join), nor when a key appears just before the decision
 *   (the `inUse` check under the lock); once the key is revoked or expired, the next run does;
 * - revoked and expired keys are deleted after `apiKeys.revokedGrace`, in batches, counted
 *   in `apiKeys`.
 *
 * The OAuth side is a stand-in with the contract of `AtProtoAuthService.revoke(did, ifUnused)`:
 * it asks `inUse()` and, when unused, deletes the stored session. The whole path through the
 * real module and PDS is covered by the end-to-end tests.
 */
import { randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';
import {
  type AppSessionRecord,
  type AppSessionStore,
  type AtProtoSessionStore,
  atProtoEntities,
  atProtoMigrations,
  MemoryAppSessionStore,
  MemorySessionStore,
  MemoryStateStore,
  TypeOrmAppSessionStore,
  TypeOrmSessionStore,
} from 'nestjs-atproto-auth';
import { AtProtoApiKeyService } from '../../lib/api-keys/api-key.service.js';
import type { AtProtoApiKeyStore } from '../../lib/api-keys/api-key.store.js';
import type { CleanupTarget } from '../../lib/cleanup/cleanup.interface.js';
import { CleanupRunner, type CleanupSettings } from '../../lib/cleanup/cleanup.service.js';
import { MemoryCleanupTarget } from '../../lib/cleanup/memory-cleanup.target.js';
import { TypeOrmCleanupTarget } from '../../lib/cleanup/typeorm-cleanup.target.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import { MemoryApiKeyStore } from '../../lib/storage/memory/memory-api-key.store.js';
import { TypeOrmApiKeyStore } from '../../lib/storage/typeorm/typeorm-api-key.store.js';
import { createTestDatabase, DIALECTS } from '../support/databases.js';
import { installTestKeyRing } from '../support/key-ring.js';
import { randomDid, sessionValue } from '../support/raw-sql.js';

installTestKeyRing();

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const IDLE = 7 * DAY;
const KEY_GRACE = DAY;

interface Backend {
  sessions: AtProtoSessionStore;
  apps: AppSessionStore;
  keys: AtProtoApiKeyStore;
  target: CleanupTarget;
  close: () => Promise<void>;
}

const backends: Array<{ name: string; open: () => Promise<Backend> }> = [
  {
    name: 'memory',
    open: async () => {
      const sessions = new MemorySessionStore({ ttlMs: 90 * DAY });
      const apps = new MemoryAppSessionStore();
      const keys = new MemoryApiKeyStore();
      const target = new MemoryCleanupTarget(
        new MemoryStateStore({ ttlMs: HOUR }),
        sessions,
        apps,
        keys,
      );
      return { sessions, apps, keys, target, close: async () => {} };
    },
  },
  ...DIALECTS.map((dialect) => ({
    name: `TypeORM on ${dialect}`,
    open: async (): Promise<Backend> => {
      const db = await createTestDatabase(dialect, 'api_key_cleanup');
      const ds = new DataSource({
        ...db.options,
        entities: [...atProtoEntities],
        migrations: atProtoMigrations(),
        migrationsRun: true,
      });
      await ds.initialize();
      return {
        sessions: new TypeOrmSessionStore(ds, { ttlMs: 90 * DAY }),
        apps: new TypeOrmAppSessionStore(ds),
        keys: new TypeOrmApiKeyStore(ds),
        target: new TypeOrmCleanupTarget(ds),
        close: async () => {
          await ds.destroy();
          await db.drop();
        },
      };
    },
  })),
];

const options = {
  appSession: { cacheTtlMs: 0 },
  apiKeys: { prefix: 'atp_', lastUsedIntervalMs: 300_000, revokedGraceMs: KEY_GRACE },
} as unknown as ResolvedAtProtoOptions;

function appSession(did: string, now: number, a: Partial<AppSessionRecord> = {}): AppSessionRecord {
  return {
    id: randomBytes(32).toString('hex'),
    did,
    createdAt: new Date(now - 2 * DAY),
    expiresAt: new Date(now + 20 * DAY),
    lastSeenAt: new Date(now - HOUR),
    revokedAt: null,
    userAgent: 'cleanup-test',
    ...a,
  };
}

describe.each(backends)('cleanup with API keys: $name', ({ open }) => {
  let b: Backend;
  let keys: AtProtoApiKeyService;
  const revoked: string[] = [];
  /** Called under the "lock", before the decision: lets a test act at that moment. */
  let beforeDecision: ((did: string) => Promise<void>) | undefined;

  beforeAll(async () => {
    b = await open();
    keys = new AtProtoApiKeyService(options, b.keys);
  });
  afterAll(async () => {
    await b?.close();
  });
  beforeEach(() => {
    revoked.length = 0;
    beforeDecision = undefined;
  });

  function runner(settings: Partial<CleanupSettings> = {}): CleanupRunner {
    const auth = {
      revoke: async (did: string, ifUnused: { since: Date; inUse: () => Promise<boolean> }) => {
        await beforeDecision?.(did);
        if (await ifUnused.inUse()) return false;
        if ((await b.sessions.get(did)) === undefined) return false;
        await b.sessions.del(did);
        revoked.push(did);
        return true;
      },
    };
    return new CleanupRunner(
      b.target,
      auth,
      async (did) => (await b.sessions.get(did)) !== undefined,
      {
        batchSize: 100,
        appSessionIdleTtlMs: IDLE,
        revokedGraceMs: DAY,
        apiKeyRevokedGraceMs: KEY_GRACE,
        ...settings,
      },
    );
  }

  /** A DID with an OAuth session whose last app session ended (revoked before the grace). */
  async function userWhoseLastDeviceWent(now: number): Promise<string> {
    const did = randomDid();
    await b.sessions.set(did, sessionValue(did));
    await b.apps.create(appSession(did, now, { revokedAt: new Date(now - DAY - 1) }));
    return did;
  }

  it.each([true, false])(
    'an active key keeps the OAuth session when the last app session goes; once revoked, the next run revokes it (anti-join pass %s)',
    async (revokeUnusedOAuthSessions) => {
      const now = Date.now();
      const withKey = await userWhoseLastDeviceWent(now);
      const without = await userWhoseLastDeviceWent(now);
      const { info } = await keys.create(withKey, { name: 'bot' });

      const first = await runner({ revokeUnusedOAuthSessions }).run(now);
      expect(first.appSessions).toBeGreaterThanOrEqual(2);
      expect(revoked).toContain(without);
      expect(revoked).not.toContain(withKey);
      expect(await b.sessions.get(withKey)).toBeDefined();

      expect(await keys.revoke(info.id, { did: withKey })).toBe(true);
      revoked.length = 0;
      if (revokeUnusedOAuthSessions) {
        // The pass over OAuth sessions no one uses finds it on the next run.
        const next = await runner({ revokeUnusedOAuthSessions }).run(Date.now());
        expect(next.oauthSessionsRevoked).toBe(1);
      } else {
        // Without that pass, the key's deletion after its grace is what frees the session.
        const later = Date.now() + KEY_GRACE + 1;
        const next = await runner({ revokeUnusedOAuthSessions }).run(later);
        expect(next.apiKeys).toBeGreaterThanOrEqual(1); // ours, and those of earlier tests
        expect(await b.keys.get(info.id)).toBeUndefined();
        expect(next.oauthSessionsRevoked).toBe(1);
      }
      expect(revoked).toEqual([withKey]);
      expect(await b.sessions.get(withKey)).toBeUndefined();
    },
  );

  it('an expired key does not keep the OAuth session', async () => {
    const now = Date.now();
    const did = randomDid();
    await b.sessions.set(did, sessionValue(did));
    await keys.create(did, { name: 'short-lived', expiresAt: new Date(now + 1000) });
    await runner().run(now);
    expect(revoked).not.toContain(did);
    await runner().run(now + 1001);
    expect(revoked).toContain(did);
  });

  it('a key created just before the decision keeps the session (inUse asks again under the lock)', async () => {
    const now = Date.now();
    const did = await userWhoseLastDeviceWent(now);
    beforeDecision = async (d) => {
      if (d === did) await keys.create(did, { name: 'just now' });
    };
    await runner().run(now);
    expect(revoked).not.toContain(did);
    expect(await b.sessions.get(did)).toBeDefined();
  });

  it('the in-use queries count active keys: neither lists a DID with one, both list it once the key ended', async () => {
    const now = Date.now();
    const cutoffs = { now, idleBefore: now - IDLE };
    const withSession = async () => {
      const did = randomDid();
      await b.sessions.set(did, sessionValue(did));
      return did;
    };
    const forever = await withSession();
    await keys.create(forever, { name: 'no expiry' });
    const later = await withSession();
    await keys.create(later, { name: 'expires later', expiresAt: new Date(now + HOUR) });
    const expired = await withSession();
    await b.keys.create({
      id: randomBytes(32).toString('hex'),
      did: expired,
      name: 'expired',
      displayPrefix: 'atp_AbCd1234',
      scopes: null,
      createdAt: new Date(now - DAY),
      expiresAt: new Date(now - 1),
      revokedAt: null,
      lastUsedAt: null,
    });
    const revokedKey = await withSession();
    const { info } = await keys.create(revokedKey, { name: 'revoked' });
    await keys.revoke(info.id, { did: revokedKey });
    const none = await withSession();

    const unused = [expired, revokedKey, none];
    const all = [forever, later, ...unused];
    expect(await b.target.didsWithoutActiveAppSession(all, cutoffs)).toEqual(unused);
    const listed: string[] = [];
    for (let after: string | undefined; ;) {
      const page = await b.target.oauthSessionsWithoutActiveAppSession(cutoffs, after, 2);
      listed.push(...page);
      if (page.length < 2) break;
      after = page.at(-1);
    }
    for (const did of unused) expect(listed).toContain(did);
    expect(listed).not.toContain(forever);
    expect(listed).not.toContain(later);
  });

  it('deletes revoked and expired keys after the grace, in batches, and keeps the others', async () => {
    // Start from an empty table: earlier tests left keys behind.
    const drained = await runner({ revokeUnusedOAuthSessions: false }).run(Date.now() + 10 * DAY);
    expect(drained.apiKeys).toBeGreaterThanOrEqual(0);
    const now = Date.now();
    const did = randomDid();
    const ended: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { info } = await keys.create(did, { name: `revoked ${i}` });
      await b.keys.revoke(info.id, did, new Date(now - KEY_GRACE - 1));
      ended.push(info.id);
    }
    const expiring = [];
    for (let i = 0; i < 3; i++) {
      expiring.push(
        (await keys.create(did, { name: `expiring ${i}`, expiresAt: new Date(now + 1000) })).info
          .id,
      );
    }
    const recent = (await keys.create(did, { name: 'revoked recently' })).info;
    await b.keys.revoke(recent.id, did, new Date(now - KEY_GRACE + HOUR));
    const live = (await keys.create(did, { name: 'live' })).info;

    // Now: the five revoked over a day ago go, 2 per batch.
    const first = await runner({ batchSize: 2, revokeUnusedOAuthSessions: false }).run(now);
    expect(first.apiKeys).toBe(5);
    for (const id of ended) expect(await b.keys.get(id)).toBeUndefined();
    for (const id of [...expiring, recent.id, live.id]) expect(await b.keys.get(id)).toBeDefined();

    // A day after the expiry, and after the recent revocation's grace: those go too.
    const later = now + 1000 + KEY_GRACE + 1;
    const second = await runner({ revokeUnusedOAuthSessions: false }).run(later);
    expect(second.apiKeys).toBe(4);
    expect((await b.keys.listForDid(did)).map((r) => r.id)).toEqual([live.id]);
  });
});

describe('the pass over unused OAuth sessions on PostgreSQL (EXPLAIN)', () => {
  let ds: DataSource;
  let drop: () => Promise<void>;
  const captured: Array<{ query: string; parameters: unknown[] }> = [];

  beforeAll(async () => {
    const db = await createTestDatabase('postgres', 'api_key_cleanup_plan');
    drop = db.drop;
    ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
      logging: ['query'],
      logger: {
        logQuery: (query: string, parameters?: unknown[]) => {
          if (/NOT EXISTS/.test(query)) captured.push({ query, parameters: parameters ?? [] });
        },
        logQueryError: () => {},
        logQuerySlow: () => {},
        logSchemaBuild: () => {},
        logMigration: () => {},
        log: () => {},
      },
    });
    await ds.initialize();
  });
  afterAll(async () => {
    await ds?.destroy();
    await drop?.();
  });

  it('stays one statement per page, never scanning the API-key table once per OAuth session', async () => {
    const now = Date.now();
    // 20,000 OAuth sessions: half the users with an app session, every one with an API key,
    // so that the key probe runs for many sessions against a big table. (The app-session
    // probe has its own EXPLAIN test next to the cleanup target's tests.)
    await ds.query(
      `INSERT INTO atproto_oauth_session (did, token_set, dpop_key, auth_method, issuer, pds_url, expires_at, created_at, updated_at, version)
       SELECT 'did:web:k' || n || '.example', '"x"', '"x"', '{}', 'https://pds.example', 'https://pds.example', ${now + DAY}, ${now}, ${now}, 1
       FROM generate_series(1, 20000) AS s(n)`,
    );
    await ds.query(
      `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at)
       SELECT md5(did), did, ${now - DAY}, ${now + DAY}, ${now - HOUR} FROM atproto_oauth_session
       WHERE length(did) % 2 = 0`,
    );
    await ds.query(
      `INSERT INTO atproto_api_key (id, did, name, display_prefix, created_at)
       SELECT md5(did) || md5(did || 'k'), did, 'bot', 'atp_AbCd1234', ${now - DAY} FROM atproto_oauth_session`,
    );
    await ds.query('ANALYZE');
    captured.length = 0;
    const target = new TypeOrmCleanupTarget(ds);
    await target.oauthSessionsWithoutActiveAppSession(
      { now, idleBefore: now - IDLE },
      'did:web:k1',
      100,
    );
    expect(captured).toHaveLength(1);
    const { query, parameters } = captured[0]!;
    const plan = (
      (await ds.query(`EXPLAIN ${query}`, parameters)) as Array<{ 'QUERY PLAN': string }>
    ).map((r) => r['QUERY PLAN']);
    const text = plan.join('\n');
    expect(text).toMatch(/Anti Join/);
    // The key table is probed by its did index, or read once per page into a hash (the
    // planner's pick when keys are many): never scanned once per OAuth session.
    const scans = plan.flatMap((line, i) => (/Seq Scan on atproto_api_key/.test(line) ? [i] : []));
    for (const i of scans) expect(plan[i - 1]).toMatch(/->\s+Hash\s/);
    if (scans.length === 0) expect(text).toMatch(/IDX_atproto_api_key_did/);
  });
});
