/**
 * The jti replay stores of single-use @AtProtoServiceAuth() routes: on the machine's Redis
 * (SET NX with the token's remaining lifetime as TTL, one claim wins among concurrent ones,
 * the key holds a hash, not the caller's jti) and in memory; and the route options checked
 * where the decorator is written.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  MemoryJtiReplayStore,
  RedisJtiReplayStore,
} from '../../lib/service-auth/jti-replay-store.js';
import { checkServiceAuthRoute } from '../../lib/service-auth/service-auth-route.js';

const PREFIX = `nestjs-atproto-auth-test:${process.pid}:${randomBytes(6).toString('hex')}:`;
const redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 2 });
const store = new RedisJtiReplayStore(redis, PREFIX);

afterAll(async () => {
  const keys = await redis.keys(`${PREFIX}*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
});

const id = () => `did:plc:abcdefghijklmnopqrstuvwx\n${randomBytes(16).toString('hex')}`;

describe('RedisJtiReplayStore', () => {
  it('claims an id once, for the TTL given, under a hashed key', async () => {
    const jti = id();
    expect(await store.claim(jti, 30_000)).toBe(true);
    expect(await store.claim(jti, 30_000)).toBe(false);
    expect(await store.claim(id(), 30_000)).toBe(true);
    const keys = await redis.keys(`${PREFIX}service-jti:*`);
    expect(keys).toHaveLength(2);
    for (const key of keys) {
      expect(key).not.toContain('did:plc');
      const ttl = await redis.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(30_000);
    }
  });

  it('lets exactly one of 50 concurrent claims of one id win', async () => {
    const jti = id();
    const results = await Promise.all(Array.from({ length: 50 }, () => store.claim(jti, 10_000)));
    expect(results.filter(Boolean)).toHaveLength(1);
  });

  it('forgets an id once its TTL has passed', async () => {
    const jti = id();
    expect(await store.claim(jti, 1)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await store.claim(jti, 10_000)).toBe(true);
  });

  it('throws when Redis cannot be reached (the verifier answers 503)', async () => {
    const down = new Redis('redis://127.0.0.1:1', {
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      lazyConnect: true,
      retryStrategy: () => null,
    });
    await expect(new RedisJtiReplayStore(down, PREFIX).claim(id(), 1000)).rejects.toThrow();
    down.disconnect();
  });
});

describe('MemoryJtiReplayStore', () => {
  it('claims an id once until its TTL has passed', async () => {
    const memory = new MemoryJtiReplayStore();
    const jti = id();
    expect(await memory.claim(jti, 10_000)).toBe(true);
    expect(await memory.claim(jti, 10_000)).toBe(false);
    expect(await memory.claim(id(), 10_000)).toBe(true);
    const short = id();
    expect(await memory.claim(short, 1)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await memory.claim(short, 10_000)).toBe(true);
  });
});

describe('MemoryJtiReplayStore when full', () => {
  it('refuses to accept more (the verifier answers 503) rather than grow without bound or forget', async () => {
    const memory = new MemoryJtiReplayStore(3);
    for (const id of ['a', 'b', 'c']) expect(await memory.claim(id, 60_000)).toBe(true);
    // Forgetting an unexpired id would let its token be replayed: the store refuses instead.
    await expect(memory.claim('d', 60_000)).rejects.toThrow(/full/);
    expect(await memory.claim('a', 60_000)).toBe(false); // still remembered
  });

  it('makes room as ids expire', async () => {
    const memory = new MemoryJtiReplayStore(2);
    expect(await memory.claim('a', 1)).toBe(true);
    expect(await memory.claim('b', 60_000)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await memory.claim('c', 60_000)).toBe(true);
  });
});

describe('checkServiceAuthRoute', () => {
  it('fills in the defaults', () => {
    expect(checkServiceAuthRoute({ lxm: 'app.bsky.feed.getFeedSkeleton' })).toEqual({
      lxm: 'app.bsky.feed.getFeedSkeleton',
      allowMethodless: false,
      singleUse: false,
      aud: undefined,
    });
    expect(
      checkServiceAuthRoute({ lxm: 'route', aud: 'did:web:a.example#svc', singleUse: true }),
    ).toEqual({
      lxm: null,
      allowMethodless: false,
      singleUse: true,
      aud: ['did:web:a.example#svc'],
    });
  });

  it.each([
    [{}, 'lxm must be an NSID'],
    [{ lxm: 'feed' }, 'lxm must be an NSID'],
    [{ lxm: 'app.bsky.feed.get/x' }, 'lxm must be an NSID'],
    [{ lxm: 'app.bsky.feed.x', singleUse: 'yes' }, 'singleUse must be true or false'],
    [{ lxm: 'app.bsky.feed.x', allowMethodless: 1 }, 'allowMethodless must be true or false'],
    [{ lxm: 'app.bsky.feed.x', aud: [] }, 'aud must be a DID'],
    [
      { lxm: 'app.bsky.feed.x', aud: ['did:web:a.example', 'https://a.example'] },
      'aud must be a DID',
    ],
  ])('refuses %j', (options, message) => {
    expect(() => checkServiceAuthRoute(options as never)).toThrow(message);
  });
});
