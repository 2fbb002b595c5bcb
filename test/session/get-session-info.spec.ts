/**
 * AtProtoAuthService.getSessionInfo(did): the OAuth session's view read from the store,
 * on every built-in backend (memory, TypeORM on SQLite, PostgreSQL and MariaDB, Redis),
 * without the lock, the OAuth client or the network: the service here is given a lock, a
 * client and a `fetch` that throw on any use, and the session's servers do not exist. On
 * TypeORM, nothing secret is read: the statement names no encrypted column and a key ring
 * that refuses to decrypt changes nothing. A store of your own without `getInfo` falls back
 * to a full read (which decrypts).
 */
import { randomBytes } from 'node:crypto';
import type { NodeOAuthClient, NodeSavedSession } from '@atproto/oauth-client-node';
import { Redis } from 'ioredis';
import { DataSource, type Logger as TypeOrmLogger } from 'typeorm';
import {
  AtProtoAuthService,
  AtProtoOAuthSessionView,
  AtProtoRequestLock,
  type AtProtoSessionStore,
  getInstalledKeyRing,
  installKeyRing,
  KeyRing,
  MemorySessionStore,
  RedisSessionStore,
  type ResolvedAtProtoOptions,
  TypeOrmSessionStore,
} from 'nestjs-atproto-auth';
import { SessionLocks } from '../../lib/oauth/session-locks.js';
import {
  createReplicatedTestDatabases,
  DIALECTS,
  migratedDataSource,
} from '../support/databases.js';
import { installTestKeyRing } from '../support/key-ring.js';
import { randomDid, sessionValue } from '../support/raw-sql.js';

const ring = installTestKeyRing();
const RETENTION_MS = 90 * 86_400_000;
/** The session's servers: nothing listens on port 1. */
const NOWHERE = 'http://127.0.0.1:1';

/** Every use of the lock, the OAuth client, the state store or `fetch`, recorded. */
const touched: string[] = [];

class ThrowingLock extends AtProtoRequestLock {
  run<T>(name: string): Promise<T> {
    touched.push(`lock ${name}`);
    throw new Error('getSessionInfo must not take the session lock');
  }
}

/** An object whose every property access is recorded and throws. */
function hostile<T>(what: string): T {
  return new Proxy({} as object, {
    get: (_, key) => {
      touched.push(`${what}.${String(key)}`);
      throw new Error(`getSessionInfo must not use the ${what}`);
    },
  }) as T;
}

function serviceOn(store: AtProtoSessionStore): AtProtoAuthService {
  const options = { oauthSessionRetentionMs: RETENTION_MS } as ResolvedAtProtoOptions;
  return new AtProtoAuthService(
    options,
    hostile<NodeOAuthClient>('OAuth client'),
    hostile('state store'),
    store,
    new SessionLocks(new ThrowingLock()),
  );
}

/** A session whose issuer and PDS do not exist, its access token expiring in 10 minutes. */
function session(did: string, accessExpiresAt = new Date(Date.now() + 600_000)) {
  const value = sessionValue(did);
  value.tokenSet = {
    ...value.tokenSet,
    iss: NOWHERE,
    aud: `${NOWHERE}/pds`,
    expires_at: accessExpiresAt.toISOString(),
  };
  return { value, accessExpiresAt };
}

const realFetch = globalThis.fetch;
beforeEach(() => {
  touched.length = 0;
  globalThis.fetch = async (input) => {
    touched.push(`fetch ${String(input)}`);
    throw new Error('getSessionInfo must not use the network');
  };
});
afterEach(() => {
  globalThis.fetch = realFetch;
  installKeyRing(ring);
  expect(touched).toEqual([]);
});

/** A key ring that refuses every decryption: what reads nothing secret does not notice. */
class RefusingKeyRing extends KeyRing {
  override decrypt(): string {
    throw new Error('decrypt() called');
  }
}
const refusing = () =>
  new RefusingKeyRing({
    activeKeyId: 'refusing',
    keys: { refusing: randomBytes(32).toString('base64') },
  });

/** The checks every backend passes. */
async function checkView(store: AtProtoSessionStore, opts: { createdAt: boolean }) {
  const did = randomDid();
  const service = serviceOn(store);
  expect(await service.getSessionInfo(did)).toBeUndefined();

  const before = Date.now();
  // The expiry is 10 minutes after `before` exactly: taken from a later clock reading, it
  // could be a millisecond further, and needsRefresh(before, 10 min) would then be false.
  const { value, accessExpiresAt } = session(did, new Date(before + 600_000));
  await store.set(did, value);
  const after = Date.now();
  const view = await service.getSessionInfo(did);
  expect(view).toBeInstanceOf(AtProtoOAuthSessionView);
  expect(view).toMatchObject({
    kind: 'oauth',
    did,
    issuer: NOWHERE,
    pdsUrl: `${NOWHERE}/pds`,
    accessExpiresAt,
  });
  const written = view!.updatedAt!.getTime();
  expect(written).toBeGreaterThanOrEqual(before);
  expect(written).toBeLessThanOrEqual(after);
  expect(view!.endsAt).toEqual(new Date(written + RETENTION_MS));
  expect(view!.createdAt).toEqual(opts.createdAt ? view!.updatedAt : undefined);

  // The access token: valid now, expired after its expiry, refreshable all along.
  expect(view!.isExpired()).toBe(false);
  expect(view!.timeUntilExpiry(before)).toBe(accessExpiresAt.getTime() - before);
  expect(view!.isExpired(accessExpiresAt)).toBe(true);
  expect(view!.timeUntilExpiry(accessExpiresAt.getTime() + 1)).toBe(0);
  expect(view!.needsRefresh(before, 60_000)).toBe(false);
  expect(view!.needsRefresh(before, 600_000)).toBe(true);
  expect(view!.isEnded(accessExpiresAt)).toBe(false);
  // The session: ends with its retention, and nothing is refreshed after that.
  expect(view!.isEnded(view!.endsAt!)).toBe(true);
  expect(view!.needsRefresh(view!.endsAt!, 600_000)).toBe(false);

  await store.del(did);
  expect(await service.getSessionInfo(did)).toBeUndefined();
}

describe('getSessionInfo on the memory store', () => {
  it('returns the view without lock, client or network', async () => {
    await checkView(new MemorySessionStore({ ttlMs: RETENTION_MS }), { createdAt: true });
  });

  it('a store of your own without getInfo: a full read through getVersioned, or get', async () => {
    const inner = new MemorySessionStore({ ttlMs: RETENTION_MS });
    const versioned = {
      get: (d: string) => inner.get(d),
      set: (d: string, v: NodeSavedSession) => inner.set(d, v),
      del: (d: string) => inner.del(d),
      getVersioned: (d: string) => inner.getVersioned(d),
      setIfVersion: (d: string, v: NodeSavedSession, n: number) => inner.setIfVersion(d, v, n),
      delIfVersion: (d: string, n: number) => inner.delIfVersion(d, n),
    };
    await checkView(versioned, { createdAt: false });

    // With get only, the end of retention is unknown: never reported as ended.
    const plain = { get: versioned.get, set: versioned.set, del: versioned.del };
    const did = randomDid();
    const { value, accessExpiresAt } = session(did);
    await plain.set(did, value);
    const view = await serviceOn(plain).getSessionInfo(did);
    expect(view).toMatchObject({ did, accessExpiresAt, endsAt: null, updatedAt: undefined });
    expect(view!.isEnded(Date.now() + 10 * RETENTION_MS)).toBe(false);
  });
});

describe('getSessionInfo on Redis', () => {
  // Connected in beforeAll, so that a run that skips this block (-t) leaves no open client.
  let redis: Redis;
  const prefix = `test:session-info:${randomBytes(4).toString('hex')}:`;
  beforeAll(() => {
    redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 2 });
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it('returns the view without lock, client or network (one GET, one decryption)', async () => {
    await checkView(new RedisSessionStore(redis, { ttlMs: RETENTION_MS, keyPrefix: prefix }), {
      createdAt: false,
    });
  });
});

describe.each(DIALECTS)('getSessionInfo on TypeORM (%s)', (dialect) => {
  const queries: string[] = [];
  const logger: TypeOrmLogger = {
    logQuery: (query) => void queries.push(query),
    logQueryError: () => undefined,
    logQuerySlow: () => undefined,
    logSchemaBuild: () => undefined,
    logMigration: () => undefined,
    log: () => undefined,
  };
  let dataSource: DataSource;
  let close: () => Promise<void>;
  let store: TypeOrmSessionStore;
  beforeAll(async () => {
    ({ dataSource, close } = await migratedDataSource(dialect, 'session_info', { logger }));
    dataSource.setOptions({ logging: ['query'] });
    store = new TypeOrmSessionStore(dataSource, { ttlMs: RETENTION_MS });
  });
  afterAll(() => close?.());

  it('returns the view without lock, client or network', async () => {
    await checkView(store, { createdAt: true });
  });

  it('reads no secret column and decrypts nothing: one statement of plain columns', async () => {
    const did = randomDid();
    const { value, accessExpiresAt } = session(did);
    await store.set(did, value);
    installKeyRing(refusing());
    // The ring is in use: a full read of the session fails on it.
    await expect(store.get(did)).rejects.toThrow(/decrypt\(\) called/);
    queries.length = 0;
    const view = await serviceOn(store).getSessionInfo(did);
    expect(view).toMatchObject({ did, accessExpiresAt });
    expect(queries).toHaveLength(1);
    expect(queries[0]).toMatch(/access_expires_at/);
    expect(queries[0]).not.toMatch(/token_set|dpop_key|auth_method/);
    expect(getInstalledKeyRing()).toBeInstanceOf(RefusingKeyRing);
  });

  it('a store of your own without getInfo pays a full read: it decrypts', async () => {
    const did = randomDid();
    await store.set(did, session(did).value);
    const withoutInfo = {
      get: (d: string) => store.get(d),
      set: (d: string, v: NodeSavedSession) => store.set(d, v),
      del: (d: string) => store.del(d),
    };
    expect(await serviceOn(withoutInfo).getSessionInfo(did)).toMatchObject({ did });
    installKeyRing(refusing());
    await expect(serviceOn(withoutInfo).getSessionInfo(did)).rejects.toThrow(/decrypt\(\) called/);
  });
});

describe.each(['postgres', 'mariadb'] as const)(
  'getSessionInfo reads the primary under replication (%s)',
  (dialect) => {
    let dataSource: DataSource;
    let drop: () => Promise<void>;
    beforeAll(async () => {
      const dbs = await createReplicatedTestDatabases(dialect, 'session_info');
      drop = dbs.drop;
      dataSource = new DataSource(dbs.options);
      await dataSource.initialize();
    });
    afterAll(async () => {
      await dataSource?.destroy();
      await drop?.();
    });

    it('finds a session written a moment before (the replica is empty)', async () => {
      const store = new TypeOrmSessionStore(dataSource, { ttlMs: RETENTION_MS });
      const did = randomDid();
      await store.set(did, session(did).value);
      expect(await serviceOn(store).getSessionInfo(did)).toMatchObject({ did });
    });
  },
);
