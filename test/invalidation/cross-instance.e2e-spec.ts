/**
 * Revocation across two app processes that share a PostgreSQL database and a redis-server
 * of the test's own, each reaching Redis through a TCP proxy the test controls. Instance B
 * has the session (or key) cached when instance A revokes it; B must refuse it:
 * - within 1 s while Redis works (the invalidation channel);
 * - within the revocation cursor's bound when the channel cannot tell B: Redis stopped, B's
 *   subscriber disconnected while A publishes, A cut off from Redis while B is not (also
 *   after longer than `cacheTtl`).
 * `appSession.cacheTtl` is 10 s here, so none of this can pass by the cache running out.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { OwnRedis } from '../support/redis-server.js';
import { TcpProxy } from './support/tcp-proxy.js';
import {
  encryptionKey,
  Instance,
  logDir,
  sharedDatabase,
  type SharedDatabase,
  until,
} from './support/instances.js';

/** Through the channel: a message takes milliseconds; 1 s is the target, with room. */
const CHANNEL_BOUND_MS = 1000;
/**
 * Through the cursor: polled every second, trusted for 2 s after its last successful poll
 * (CURSOR_PROOF_MS); 2 s more of slack for a loaded machine.
 */
const CURSOR_BOUND_MS = 2000 + 2000;
const CACHE_TTL_MS = 10_000;
const DID = 'did:plc:crossinstance2345abcdefgh';

let redis: OwnRedis;
let proxyA: TcpProxy;
let proxyB: TcpProxy;
let db: SharedDatabase;
let logs: Awaited<ReturnType<typeof logDir>>;
let a: Instance;
let b: Instance;

beforeAll(async () => {
  [redis, db, logs] = await Promise.all([
    OwnRedis.start(),
    sharedDatabase('invalidation'),
    logDir(),
  ]);
  const target = { host: '127.0.0.1', port: redis.port };
  [proxyA, proxyB] = await Promise.all([TcpProxy.start(target), TcpProxy.start(target)]);
  const env = {
    DATABASE_URL: db.url,
    ENC_KEY: encryptionKey(),
    CACHE_TTL: String(CACHE_TTL_MS),
    INVALIDATED_CACHE_TTL: '300000',
  };
  const log = logs.log('instances');
  [a, b] = await Promise.all([
    Instance.start('A', { ...env, REDIS_URL: proxyA.url }, log),
    Instance.start('B', { ...env, REDIS_URL: proxyB.url }, log),
  ]);
}, 180_000);

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await Promise.all([proxyA?.close(), proxyB?.close()]);
  await redis?.stop();
  await db?.drop();
  await logs?.remove();
}, 60_000);

/** Both instances trust their invalidation paths (skipped by a version without them). */
async function bothTrusted(ms = 20_000): Promise<void> {
  await until(
    'both instances trusted',
    async () => {
      const [sa, sb] = await Promise.all([a.state(), b.state()]);
      return sa === null || (sa.trusted && sb!.trusted);
    },
    ms,
  );
}

/** A session created on A and cached on B (B has just answered 200 with it). */
async function cachedOnB(): Promise<{ token: string; id: string }> {
  const s = await a.session(DID);
  expect(await b.me(s.token)).toBe(200);
  expect(await b.me(s.token)).toBe(200);
  return s;
}

/** Revokes with `revoke` (through A) and resolves how long B took to answer 401. */
async function refusedByB(revoke: () => Promise<unknown>, token: string, bound: number) {
  const from = Date.now();
  await revoke();
  return until(
    'B refuses the revoked session',
    async () => (await b.me(token)) === 401,
    bound,
    from,
  );
}

describe('Redis working', () => {
  beforeAll(() => bothTrusted(), 30_000);

  it('a session revoked on A is refused by B within 1 s', async () => {
    const s = await cachedOnB();
    await refusedByB(() => a.revoke(s.id), s.token, CHANNEL_BOUND_MS);
    expect(await a.me(s.token)).toBe(401);
  });

  it('log out everywhere on A: B refuses every session of the DID within 1 s', async () => {
    const one = await cachedOnB();
    const two = await cachedOnB();
    const from = Date.now();
    expect(await a.revokeAll(DID)).toBeGreaterThanOrEqual(2);
    await until(
      'B refuses both',
      async () => (await b.me(one.token)) === 401 && (await b.me(two.token)) === 401,
      CHANNEL_BOUND_MS,
      from,
    );
  });

  it('an API key revoked on A is refused by B within 1 s', async () => {
    const k = await a.key(DID);
    expect(await b.meWithKey(k.key)).toBe(200);
    const from = Date.now();
    await a.revokeKey(k.id, DID);
    await until(
      'B refuses the key',
      async () => (await b.meWithKey(k.key)) === 401,
      CHANNEL_BOUND_MS,
      from,
    );
  });
});

describe('when the channel cannot tell B', () => {
  it('Redis stopped: B refuses within the cursor bound; Redis back: within 1 s again', async () => {
    await bothTrusted();
    const s = await cachedOnB();
    await redis.stop();
    try {
      expect(await b.me(s.token)).toBe(200); // read again after the gap, cached for cacheTtl
      await refusedByB(() => a.revoke(s.id), s.token, CURSOR_BOUND_MS);
    } finally {
      await redis.restart();
    }
    await bothTrusted(30_000);
    const t = await cachedOnB();
    await refusedByB(() => a.revoke(t.id), t.token, CHANNEL_BOUND_MS);
  }, 90_000);

  it("a revocation published while B's subscriber is disconnected: B refuses within the cursor bound", async () => {
    await bothTrusted();
    const s = await cachedOnB();
    proxyB.cutSubscribers(); // B's subscriber is down and cannot come back; its lock connection works
    try {
      await until(
        "B's subscriber down",
        async () => ((await b.state())?.channel ?? 'down') === 'down',
        5000,
      );
      expect(await b.me(s.token)).toBe(200);
      await refusedByB(() => a.revoke(s.id), s.token, CURSOR_BOUND_MS);
    } finally {
      proxyB.pass();
    }
    await bothTrusted(30_000);
  }, 60_000);

  it('A cut off from Redis while B is not: B refuses A’s revocations within the cursor bound, also after longer than cacheTtl', async () => {
    await bothTrusted();
    const first = await cachedOnB();
    const second = await cachedOnB();
    proxyA.blackhole(); // A's connections stay open and carry nothing: A publishes into the void
    try {
      await refusedByB(() => a.revoke(first.id), first.token, CURSOR_BOUND_MS);
      // B's own channel is fine: it keeps the long lifetime, and the cursor is what covers it.
      const state = await b.state();
      if (state) expect(state.trusted).toBe(true);
      await sleep(CACHE_TTL_MS + 1000);
      expect(await b.me(second.token)).toBe(200);
      await refusedByB(() => a.revoke(second.id), second.token, CURSOR_BOUND_MS);
    } finally {
      proxyA.pass();
    }
    await bothTrusted(30_000);
  }, 90_000);
});
