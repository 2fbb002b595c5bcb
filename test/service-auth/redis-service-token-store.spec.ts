/**
 * The shared service-token store on the machine's Redis: sealed values bound to their key,
 * a TTL that ends when the token may no longer be handed out, invalidation per DID or per
 * audience (the Lua script's matching, bare DIDs covering their #service forms), and reads
 * that turn anything unexpected into a miss.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { KeyRing } from 'nestjs-atproto-auth';
import { RedisServiceTokenStore } from '../../lib/service-auth/redis-service-token-store.js';
import type { ServiceTokenKey } from '../../lib/service-auth/service-token-cache.js';
import { randomKey } from '../support/key-ring.js';

const PREFIX = `nestjs-atproto-auth-test:${process.pid}:${randomBytes(6).toString('hex')}:`;
const redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 2 });
const ring = new KeyRing({ activeKeyId: 'sa-1', keys: { 'sa-1': randomKey() } });
const warnings: string[] = [];
const store = new RedisServiceTokenStore(redis, ring, PREFIX, {
  warn: (m: string) => warnings.push(m),
});

afterAll(async () => {
  const keys = await redis.keys(`${PREFIX}*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
});

const did = () => `did:plc:${randomBytes(12).toString('hex').slice(0, 24)}`;
const FEED = 'did:web:feed.example.com';
const key = (d: string, aud = FEED, lxm: string | null = 'app.bsky.feed.getFeedSkeleton') =>
  ({ did: d, aud, lxm }) satisfies ServiceTokenKey;
const entryKeys = async (d: string) => (await redis.keys(`${PREFIX}service-auth:{${d}}:*`)).sort();

describe('RedisServiceTokenStore', () => {
  it('seals the token under its key with a TTL that ends at validUntil', async () => {
    const d = did();
    const now = Date.now();
    await store.set(key(d), { token: 'eyJ.secret-token.sig', validUntil: now + 30_000 }, now);
    const [entry] = await entryKeys(d);
    const raw = (await redis.get(entry as string)) as string;
    expect(raw.startsWith('v1.sa-1.')).toBe(true);
    expect(raw).not.toContain('secret-token');
    const ttl = await redis.pttl(entry as string);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30_000);
    expect(await store.get(key(d), now)).toEqual({
      token: 'eyJ.secret-token.sig',
      validUntil: now + 30_000,
    });
    // Another method, audience or DID is another entry.
    expect(await store.get(key(d, FEED, null), now)).toBeUndefined();
    expect(await store.get(key(d, `${FEED}#x`), now)).toBeUndefined();
    expect(await store.get(key(did()), now)).toBeUndefined();
  });

  it('reads a value past its validUntil, a value moved to another key or garbage as a miss', async () => {
    const d = did();
    const now = Date.now();
    await store.set(key(d), { token: 't1', validUntil: now + 30_000 }, now);
    expect(await store.get(key(d), now + 30_000)).toBeUndefined();
    // Copied under another method's key: bound to its own key, it does not decrypt there.
    await store.set(key(d, FEED, 'a.b.other'), { token: 't2', validUntil: now + 30_000 }, now);
    const [x, y] = await entryKeys(d);
    await redis.set(y as string, (await redis.get(x as string)) as string);
    const reads = await Promise.all([
      store.get(key(d), now),
      store.get(key(d, FEED, 'a.b.other'), now),
    ]);
    expect(reads.filter((r) => r === undefined)).toHaveLength(1);
    await redis.set(x as string, 'garbage');
    await redis.set(y as string, 'garbage');
    expect(await store.get(key(d), now)).toBeUndefined();
    expect(warnings.join('\n')).toMatch(/could not read an entry/);
    expect(warnings.join('\n')).not.toMatch(/t1|t2/);
  });

  it('does not store a token that is no longer valid', async () => {
    const d = did();
    const now = Date.now();
    await store.set(key(d), { token: 't', validUntil: now }, now);
    expect(await entryKeys(d)).toEqual([]);
  });

  it('invalidates a DID, a bare audience with its #service forms, or one service', async () => {
    const d = did();
    const other = did();
    const now = Date.now();
    const keys = {
      feed: key(d),
      feedService: key(d, `${FEED}#bsky_fg`),
      feedOther: key(d, `${FEED}#other`),
      longer: key(d, `${FEED}x`),
      labeler: key(d, 'did:web:labeler.example.com', null),
      otherDid: key(other),
    };
    const fill = async () => {
      for (const [name, k] of Object.entries(keys)) {
        await store.set(k, { token: name, validUntil: now + 60_000 }, now);
      }
    };
    const kept = async () => {
      const names: string[] = [];
      for (const [name, k] of Object.entries(keys)) if (await store.get(k, now)) names.push(name);
      return names;
    };
    await fill();
    await store.invalidate(d, `${FEED}#bsky_fg`);
    expect(await kept()).toEqual(['feed', 'feedOther', 'longer', 'labeler', 'otherDid']);
    await fill();
    await store.invalidate(d, FEED);
    expect(await kept()).toEqual(['longer', 'labeler', 'otherDid']);
    await fill();
    await store.invalidate(d, undefined);
    expect(await kept()).toEqual(['otherDid']);
    // The index went with the entries.
    expect(await redis.hlen(`${PREFIX}service-auth:{${d}}`)).toBe(0);
  });

  it('keeps the index as long as its longest token', async () => {
    const d = did();
    const now = Date.now();
    await store.set(key(d, FEED, 'a.b.long'), { token: 'l', validUntil: now + 60_000 }, now);
    await store.set(key(d, FEED, 'a.b.short'), { token: 's', validUntil: now + 5_000 }, now);
    const ttl = await redis.pttl(`${PREFIX}service-auth:{${d}}`);
    expect(ttl).toBeGreaterThan(5_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });
});
