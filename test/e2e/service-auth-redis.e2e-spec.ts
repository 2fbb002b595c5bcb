/**
 * The service-token cache shared through Redis by two instances of the app (two Nest apps
 * on one PostgreSQL database and one Redis, against the real local PDS): a token minted on
 * one is handed out by the other, sealed with the key ring in Redis with a TTL that ends at
 * its expiry minus the margin; an invalidation on one reaches the other; concurrent misses
 * mint at most once per instance; and with Redis gone, tokens are still minted.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RequestListener, Server } from 'node:http';
import { Redis } from 'ioredis';
import { decodeJwt } from 'jose';
import { AtProtoServiceAuthService, AtProtoUnavailableError } from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import { OwnRedis } from '../support/redis-server.js';
import { AppBrowser } from './support/app-client.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

const SERVICE = 'did:web:feed.e2e.internal';
const FEED = 'app.bsky.feed.getFeedSkeleton';
const PREFIX = `svcauth-${randomBytes(4).toString('hex')}:`;

let pds: TestPds;
let redisServer: OwnRedis;
let redis: Redis;
let a: TestApp;
let b: TestApp;
let drop: () => Promise<void>;
let olga: TestAccount;
let onA: AtProtoServiceAuthService;
let onB: AtProtoServiceAuthService;
const minted: URLSearchParams[] = [];

function countServiceAuthRequests(server: Server): void {
  const listeners = server.listeners('request') as RequestListener[];
  server.removeAllListeners('request');
  server.on('request', (req, res) => {
    const url = new URL(req.url ?? '/', 'http://pds');
    if (url.pathname === '/xrpc/com.atproto.server.getServiceAuth') {
      // A 401 here is the PDS asking for a fresh DPoP nonce (the OAuth session then sends
      // the request again): it never reached the handler, and minted nothing.
      res.once('finish', () => {
        if (res.statusCode !== 401) minted.push(url.searchParams);
      });
    }
    for (const listener of listeners) listener.call(server, req, res);
  });
}

beforeAll(async () => {
  pds = await startTestPds();
  countServiceAuthRequests(pds.pds.server as Server);
  redisServer = await OwnRedis.start();
  redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
  const db = await createTestDatabase('postgres', 'e2e_service_auth_redis');
  drop = db.drop;
  // One deployment: the same database, Redis, prefix and encryption keys on both instances.
  const shared = {
    redis: redisServer.url,
    redisKeyPrefix: PREFIX,
    encryption: { activeKeyId: 'e2e', keys: { e2e: randomKey() } },
  };
  a = await startTestApp(pds, db.options, shared);
  b = await startTestApp(pds, db.options, shared);
  onA = a.app.get(AtProtoServiceAuthService);
  onB = b.app.get(AtProtoServiceAuthService);
  olga = await pds.createAccount('olga.test');
  expect((await new AppBrowser(a.url).login(olga)).status).toBe(302);
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  redis?.disconnect();
  await redisServer?.stop();
  await drop?.();
  await pds?.stop();
});
beforeEach(async () => {
  await onA.invalidate(olga.did);
  minted.length = 0;
});

const ask = (on: AtProtoServiceAuthService, lxm = FEED) =>
  on.getToken(olga.did, { aud: SERVICE, lxm });

describe('two instances on one Redis', () => {
  it('share a token: minted once, on the first instance that asks', async () => {
    const token = await ask(onA);
    const before = onB.stats();
    expect(await ask(onB)).toBe(token);
    expect(minted).toHaveLength(1);
    expect(onB.stats()).toMatchObject({
      hits: before.hits + 1,
      misses: before.misses,
      valid: before.valid + 1,
    });
  });

  it('keep it sealed in Redis until its expiry minus the margin', async () => {
    const token = await ask(onA);
    const keys = await redis.keys(`${PREFIX}service-auth:*`);
    const entries = keys.filter((k) => k !== `${PREFIX}service-auth:{${olga.did}}`);
    expect(entries).toHaveLength(1);
    const stored = (await redis.get(entries[0] as string)) as string;
    expect(stored.startsWith('v1.e2e.')).toBe(true);
    for (const part of token.split('.')) expect(stored).not.toContain(part);
    const ttl = await redis.pttl(entries[0] as string);
    const validUntil = (decodeJwt(token).exp as number) * 1000 - 10_000;
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(validUntil - Date.now() + 1000);
  });

  it('see an invalidation made on the other', async () => {
    const token = await ask(onA);
    expect(await ask(onB)).toBe(token);
    await onB.invalidate(olga.did, SERVICE);
    const fresh = await ask(onA);
    expect(fresh).not.toBe(token);
    expect(await ask(onB)).toBe(fresh);
    expect(minted).toHaveLength(2);
  });

  it('mint at most once each for 100 concurrent callers split between them', async () => {
    const tokens = await Promise.all(
      Array.from({ length: 100 }, (_, i) => ask(i % 2 ? onA : onB, 'app.bsky.feed.getFeed')),
    );
    expect(minted.length).toBeGreaterThanOrEqual(1);
    expect(minted.length).toBeLessThanOrEqual(2);
    expect(new Set(tokens).size).toBe(minted.length);
  });

  it('still mint tokens while Redis is down, and share again once it is back', async () => {
    await redisServer.stop();
    try {
      const first = await ask(onA);
      expect(first).toBeTruthy();
      expect(minted).toHaveLength(1);
      await expect(onB.invalidate(olga.did)).rejects.toThrow(AtProtoUnavailableError);
      // Nest's loggers write to the app created last: either app's lines may hold it.
      expect([...a.logs, ...b.logs].join('\n')).toMatch(/shared service-token cache could not/);
    } finally {
      await redisServer.restart();
    }
    // Both instances' connections reconnect on their own (within a few seconds): then a
    // token minted on one is handed out by the other again.
    let shared = false;
    for (let i = 0; i < 100 && !shared; i++) {
      await sleep(100);
      const token = await ask(onA);
      shared = (await ask(onB)) === token;
    }
    expect(shared).toBe(true);
  });
});
