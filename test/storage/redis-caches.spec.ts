/**
 * The OAuth client's caches on Redis: shared between connections (instances), with a TTL
 * each, sealed with the key ring, and never failing a request when Redis does.
 */
import { randomBytes } from 'node:crypto';
import type { AtprotoDid, NodeOAuthClientOptions } from '@atproto/oauth-client-node';
import { Redis } from 'ioredis';
import {
  KeyRing,
  installKeyRing,
  createRedisOAuthCaches,
  REDIS_OAUTH_CACHE_TTL_MS,
  type RedisOAuthCaches,
} from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';
import { randomDid } from '../support/raw-sql.js';
import { OwnRedis } from '../support/redis-server.js';

installKeyRing(new KeyRing({ activeKeyId: 'cache-1', keys: { 'cache-1': randomKey() } }));

const silent = { debug: () => undefined };
const PREFIX = `nestjs-atproto-auth-test:${process.pid}:${randomBytes(6).toString('hex')}:`;
const a = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 2 });
const b = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 2 });

afterAll(async () => {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await a.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  if (keys.length > 0) await a.del(...keys);
  await Promise.all([a.quit(), b.quit()]);
});

/** A DID document as the DID cache holds it. */
function didDocument(did: string) {
  return {
    '@context': ['https://www.w3.org/ns/did/v1'],
    id: did,
    alsoKnownAs: ['at://alice.example.test'],
    service: [
      {
        id: '#atproto_pds',
        type: 'AtprotoPersonalDataServer',
        serviceEndpoint: 'https://pds-of-alice.example.test',
      },
    ],
  } as unknown as Parameters<RedisOAuthCaches['didCache']['set']>[1];
}

describe('createRedisOAuthCaches', () => {
  it('fits the NodeOAuthClient options (type check) and uses the documented default TTLs', () => {
    const caches = createRedisOAuthCaches(a, { keyPrefix: PREFIX });
    const options: Partial<NodeOAuthClientOptions> = { ...caches };
    expect(Object.keys(options).sort()).toEqual(
      [
        'authorizationServerMetadataCache',
        'didCache',
        'dpopNonceCache',
        'handleCache',
        'protectedResourceMetadataCache',
      ].sort(),
    );
    expect(REDIS_OAUTH_CACHE_TTL_MS).toEqual({
      dpopNonceCache: 60_000,
      didCache: 3_600_000,
      handleCache: 600_000,
      authorizationServerMetadataCache: 60_000,
      protectedResourceMetadataCache: 60_000,
    });
  });

  it('shares values between two cache sets on two connections (two instances)', async () => {
    const one = createRedisOAuthCaches(a, { keyPrefix: PREFIX });
    const two = createRedisOAuthCaches(b, { keyPrefix: PREFIX });
    const did = randomDid() as AtprotoDid;
    const origin = `https://pds-${randomBytes(4).toString('hex')}.example.test`;
    const handle = `alice-${randomBytes(4).toString('hex')}.example.test`;
    const missing = `nobody-${randomBytes(4).toString('hex')}.example.test`;

    expect(await two.dpopNonceCache.get(origin)).toBeUndefined();
    await one.dpopNonceCache.set(origin, 'nonce-1');
    expect(await two.dpopNonceCache.get(origin)).toBe('nonce-1');
    await two.dpopNonceCache.set(origin, 'nonce-2');
    expect(await one.dpopNonceCache.get(origin)).toBe('nonce-2');

    await one.didCache.set(did, didDocument(did));
    expect(await two.didCache.get(did)).toEqual(didDocument(did));

    // A handle that resolved to no DID is cached as null, which is not a miss.
    await one.handleCache.set(handle, did);
    await one.handleCache.set(missing, null);
    expect(await two.handleCache.get(handle)).toBe(did);
    expect(await two.handleCache.get(missing)).toBeNull();

    await two.didCache.del(did);
    expect(await one.didCache.get(did)).toBeUndefined();

    // Another prefix is another namespace.
    const other = createRedisOAuthCaches(b, { keyPrefix: `${PREFIX}other:` });
    expect(await other.dpopNonceCache.get(origin)).toBeUndefined();
  });

  it('sets a TTL on every key: the defaults, or those given', async () => {
    const caches = createRedisOAuthCaches(a, {
      keyPrefix: `${PREFIX}ttl:`,
      ttlMs: { didCache: 120_000 },
    });
    const did = randomDid() as AtprotoDid;
    const origin = 'https://pds.example.test';
    await caches.dpopNonceCache.set(origin, 'n');
    await caches.didCache.set(did, didDocument(did));
    await caches.handleCache.set('alice.example.test', did);
    await caches.authorizationServerMetadataCache.set(origin, {
      issuer: origin,
    } as unknown as Parameters<RedisOAuthCaches['authorizationServerMetadataCache']['set']>[1]);
    await caches.protectedResourceMetadataCache.set(origin, null);
    const pttl = (key: string) => a.pttl(`${PREFIX}ttl:cache:${key}`);
    const expectTtl = async (key: string, ttl: number) => {
      const left = await pttl(key);
      expect([key, left <= ttl && left > ttl - 5000]).toEqual([key, true]);
    };
    await expectTtl(`dpop-nonce:${origin}`, 60_000);
    await expectTtl(`did:${did}`, 120_000);
    await expectTtl('handle:alice.example.test', 600_000);
    await expectTtl(`as-metadata:${origin}`, 60_000);
    await expectTtl(`pr-metadata:${origin}`, 60_000);
  });

  it('seals entries with the key ring: no clear JSON in Redis, and a tampered entry is a miss', async () => {
    const caches = createRedisOAuthCaches(a, { keyPrefix: `${PREFIX}seal:`, logger: silent });
    const did = randomDid() as AtprotoDid;
    await caches.didCache.set(did, didDocument(did));
    const key = `${PREFIX}seal:cache:did:${did}`;
    const raw = (await a.get(key))!;
    expect(raw).toMatch(/^v1\.cache-1\./);
    expect(raw).not.toContain('pds-of-alice');

    // Someone with write access to Redis plants a DID document of their own.
    await a.set(key, JSON.stringify(didDocument(did)), 'PX', 60_000);
    expect(await caches.didCache.get(did)).toBeUndefined();
    // ...or moves a sealed entry to another key.
    const other = randomDid() as typeof did;
    await a.set(`${PREFIX}seal:cache:did:${other}`, raw, 'PX', 60_000);
    expect(await caches.didCache.get(other)).toBeUndefined();
  });
});

describe('createRedisOAuthCaches: server metadata kept in process for a few seconds', () => {
  /** A client whose GETs are counted (every restore reads the server metadata). */
  function counting(): { client: Redis; gets: () => number } {
    let gets = 0;
    const client = new Proxy(a, {
      get(target, key, receiver) {
        if (key === 'get') {
          return (...args: Parameters<Redis['get']>) => {
            gets++;
            return target.get(...args);
          };
        }
        const value = Reflect.get(target, key, receiver) as unknown;
        return typeof value === 'function'
          ? (value as (...x: unknown[]) => unknown).bind(target)
          : value;
      },
    });
    return { client, gets: () => gets };
  }
  const metadata = (issuer: string) =>
    ({ issuer }) as unknown as Parameters<
      RedisOAuthCaches['authorizationServerMetadataCache']['set']
    >[1];

  it('reads Redis once per issuer within localTtl, and again after it', async () => {
    let now = 1_000_000;
    const { client, gets } = counting();
    const caches = createRedisOAuthCaches(client, {
      keyPrefix: PREFIX,
      localTtlMs: 5_000,
      now: () => now,
    });
    const issuer = `https://as-${randomBytes(4).toString('hex')}.example.test`;
    await createRedisOAuthCaches(b, { keyPrefix: PREFIX }).authorizationServerMetadataCache.set(
      issuer,
      metadata(issuer),
    );
    for (let i = 0; i < 5; i++) {
      expect(await caches.authorizationServerMetadataCache.get(issuer)).toEqual(metadata(issuer));
    }
    expect(gets()).toBe(1);
    now += 5_001;
    expect(await caches.authorizationServerMetadataCache.get(issuer)).toEqual(metadata(issuer));
    expect(gets()).toBe(2);
  });

  it('keeps nothing in process for nonces, DID documents and handles, nor with localTtl 0', async () => {
    const { client, gets } = counting();
    const caches = createRedisOAuthCaches(client, { keyPrefix: PREFIX });
    const off = createRedisOAuthCaches(client, { keyPrefix: PREFIX, localTtlMs: 0 });
    const origin = `https://pds-${randomBytes(4).toString('hex')}.example.test`;
    await caches.dpopNonceCache.set(origin, 'n');
    await caches.dpopNonceCache.get(origin);
    await caches.dpopNonceCache.get(origin);
    await off.protectedResourceMetadataCache.get(origin);
    await off.protectedResourceMetadataCache.get(origin);
    expect(gets()).toBe(4);
  });

  it('a delete drops the copy in process, and a miss is not kept', async () => {
    const { client, gets } = counting();
    const caches = createRedisOAuthCaches(client, { keyPrefix: PREFIX });
    const issuer = `https://as-${randomBytes(4).toString('hex')}.example.test`;
    expect(await caches.authorizationServerMetadataCache.get(issuer)).toBeUndefined();
    await caches.authorizationServerMetadataCache.set(issuer, metadata(issuer));
    expect(await caches.authorizationServerMetadataCache.get(issuer)).toEqual(metadata(issuer));
    await caches.authorizationServerMetadataCache.del(issuer);
    expect(await caches.authorizationServerMetadataCache.get(issuer)).toBeUndefined();
    expect(gets()).toBe(2); // the first miss and the read after the delete; the set is kept
  });
});

describe('createRedisOAuthCaches with Redis down', () => {
  let own: OwnRedis;
  const clients: Redis[] = [];
  beforeAll(async () => {
    own = await OwnRedis.start();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    await own?.stop();
  });

  it.each([
    ['ioredis defaults (offline queue: commands wait, the cache times out)', {}],
    ['enableOfflineQueue: false (commands fail at once)', { enableOfflineQueue: false }],
  ])('get resolves undefined and set/del resolve, without throwing, with %s', async (_, opts) => {
    const client = new Redis(own.url, { retryStrategy: () => 100, disconnectTimeout: 50, ...opts });
    client.on('error', () => undefined);
    clients.push(client);
    if (client.status !== 'ready') await new Promise((r) => client.once('ready', r));
    const logged: string[] = [];
    // Long enough that the round trips while Redis is up never time out on a loaded machine.
    const caches = createRedisOAuthCaches(client, {
      timeoutMs: 800,
      logger: { debug: (m) => logged.push(m) },
    });
    await caches.dpopNonceCache.set('https://pds.example.test', 'n1');
    expect(await caches.dpopNonceCache.get('https://pds.example.test')).toBe('n1');

    await own.stop();
    try {
      for (let i = 0; i < 100 && client.status === 'ready'; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      const started = Date.now();
      await expect(caches.dpopNonceCache.get('https://pds.example.test')).resolves.toBeUndefined();
      await expect(caches.didCache.get(randomDid() as never)).resolves.toBeUndefined();
      await expect(caches.handleCache.set('alice.example.test', null)).resolves.toBeUndefined();
      await expect(caches.dpopNonceCache.del('https://pds.example.test')).resolves.toBeUndefined();
      expect(Date.now() - started).toBeLessThan(4 * 800 + 1000);
      expect(logged.length).toBe(4);
      expect(logged[0]).toMatch(
        /^dpopNonceCache get\("https:\/\/pds\.example\.test"\) failed, ignored: /,
      );
    } finally {
      await own.restart();
    }
  });

  it('a rejecting client and a throwing logger do not make a cache throw either', async () => {
    const throwing = {
      get: () => Promise.reject(new Error('boom')),
      set: () => Promise.reject(new Error('boom')),
      del: () => Promise.reject(new Error('boom')),
    };
    const caches = createRedisOAuthCaches(throwing, {
      logger: {
        debug: () => {
          throw new Error('logger down');
        },
      },
    });
    await expect(caches.didCache.get(randomDid() as never)).resolves.toBeUndefined();
    await expect(caches.dpopNonceCache.set('https://x.example', 'n')).resolves.toBeUndefined();
  });
});
