/**
 * The Redis OAuth state and session stores: the conformance suite on the shared Redis, what
 * a Redis dump shows (nothing usable), key TTLs, and writes across a Redis restart (a
 * redis-server of the test's own, really stopped and started again).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import ts from 'typescript';
import {
  KeyRing,
  installKeyRing,
  AtProtoDecryptionError,
  AtProtoStoreError,
  RedisSessionStore,
  RedisStateStore,
  isTransientDatabaseError,
} from 'nestjs-atproto-auth';
import { defineStoreConformanceTests } from 'nestjs-atproto-auth/testing';
import { randomKey } from '../support/key-ring.js';
import { encodings, jwkD, jwkDEncodings, leaks, openEnvelope } from '../support/secret-needles.js';
import { dpopPrivateJwk, randomDid, secret, sessionValue, stateValue } from '../support/raw-sql.js';
import { OwnRedis } from '../support/redis-server.js';
import { CuttingProxy } from './fault-proxy.js';

const KEY_ID = 'redis-2026';
const KEY = randomKey();
const ring = new KeyRing({ activeKeyId: KEY_ID, keys: { [KEY_ID]: KEY } });
installKeyRing(ring);

/** Every key this file writes on the shared Redis starts with it (deleted in afterAll). */
const PREFIX = `nestjs-atproto-auth-test:${process.pid}:${randomBytes(6).toString('hex')}:`;
const shared = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 2 });

afterAll(async () => {
  const keys = await scanKeys(shared, `${PREFIX}*`);
  if (keys.length > 0) await shared.del(...keys);
  await shared.quit();
});

async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

defineStoreConformanceTests({
  name: 'redis',
  createStateStore: (ctx) => new RedisStateStore(shared, { ...ctx, keyPrefix: `${PREFIX}conf:` }),
  createSessionStore: (ctx) =>
    new RedisSessionStore(shared, { ...ctx, keyPrefix: `${PREFIX}conf:` }),
  fencedWrites: true,
  sessionInfo: true,
});

describe('Redis stores at rest', () => {
  const prefix = `${PREFIX}rest:`;
  const SESSION_TTL = 90 * 24 * 3_600_000;
  const STATE_TTL = 30 * 60_000;
  const sessions = new RedisSessionStore(shared, { ttlMs: SESSION_TTL, keyPrefix: prefix });
  const states = new RedisStateStore(shared, { ttlMs: STATE_TTL, keyPrefix: prefix });

  it('keeps tokens, DPoP key and PKCE verifier out of Redis, in clear or base64', async () => {
    const did = randomDid();
    const stateKey = randomBytes(16).toString('base64url');
    const accessToken = secret('access', 96);
    const refreshToken = secret('refresh', 64);
    const sessionJwk = dpopPrivateJwk();
    const stateJwk = dpopPrivateJwk();
    const verifier = secret('verifier', 64);
    await sessions.set(did, sessionValue(did, { accessToken, refreshToken, dpopJwk: sessionJwk }));
    await states.set(stateKey, stateValue({ verifier, dpopJwk: stateJwk }));

    // Everything under the prefix, as SCAN + GET (what a dump or a read-only user sees).
    const keys = await scanKeys(shared, `${prefix}*`);
    expect(keys).toEqual(
      expect.arrayContaining([`${prefix}session:${did}`, `${prefix}state:${stateKey}`]),
    );
    const values = await Promise.all(keys.map((k) => shared.get(k)));
    const dump = keys.map((k, i) => `${k} => ${values[i]}`).join('\n');
    // A session: `#<version>:<updatedAt>:<expiresAt>:` and the envelope; a state: the envelope.
    for (const [i, v] of values.entries()) {
      expect(v).toMatch(
        keys[i]!.includes(':session:')
          ? /^#\d+:\d+:\d+:v1\.redis-2026\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/
          : /^v1\.redis-2026\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/,
      );
    }

    const needles = [
      ...encodings('access token', accessToken),
      ...encodings('refresh token', refreshToken),
      ...encodings('PKCE verifier', verifier),
      ...jwkDEncodings('session DPoP d', jwkD(sessionJwk)),
      ...jwkDEncodings('state DPoP d', jwkD(stateJwk)),
    ];
    expect(leaks(dump, needles)).toEqual([]);
  });

  it('writes the documented value: version, write time and expiry, then the envelope bound to "redis:" + the full key', async () => {
    const did = randomDid();
    const session = sessionValue(did);
    const before = Date.now();
    await sessions.set(did, session);
    const key = `${prefix}session:${did}`;
    const [, version, updatedAt, expiresAt, envelope] = /^#(\d+):(\d+):(\d+):(.+)$/.exec(
      (await shared.get(key))!,
    )!;
    const payload = JSON.parse(
      openEnvelope(envelope!, `redis:${key}`, { id: KEY_ID, base64: KEY }),
    ) as {
      e: number;
      v: unknown;
    };
    expect(payload.v).toEqual(session);
    expect(payload.e).toBeGreaterThanOrEqual(before + SESSION_TTL);
    expect(payload.e).toBeLessThanOrEqual(Date.now() + SESSION_TTL);
    expect(Number(expiresAt)).toBe(payload.e);
    expect(Number(updatedAt)).toBe(payload.e - SESSION_TTL);
    expect(await sessions.getVersioned(did)).toEqual({
      value: session,
      version: Number(version),
      updatedAt: new Date(Number(updatedAt)),
    });
  });

  /** A session value as 0.1.0 wrote it: the bare envelope of `{ e, v }`, with `PX`. */
  async function writeLegacy(did: string, value: unknown, writtenAt: number): Promise<void> {
    const key = `${prefix}session:${did}`;
    const envelope = ring.encrypt(
      JSON.stringify({ e: writtenAt + SESSION_TTL, v: value }),
      `redis:${key}`,
    );
    await shared.set(key, envelope, 'PX', SESSION_TTL);
  }

  it('reads a session written by 0.1.0 (a bare envelope) as version 0, written at its expiry less the retention', async () => {
    const did = randomDid();
    const value = sessionValue(did);
    const writtenAt = Date.now() - 60_000;
    await writeLegacy(did, value, writtenAt);
    expect(await sessions.get(did)).toEqual(value);
    expect(await sessions.getVersioned(did)).toEqual({
      value,
      version: 0,
      updatedAt: new Date(writtenAt),
    });
  });

  it('replaces a 0.1.0 session by a fenced write of version 0, or by a set, in the new form with its TTL', async () => {
    const fenced = randomDid();
    await writeLegacy(fenced, sessionValue(fenced), Date.now());
    await shared.pexpire(`${prefix}session:${fenced}`, 10_000);
    const next = sessionValue(fenced);
    expect(await sessions.setIfVersion(fenced, sessionValue(fenced), 1)).toBeUndefined();
    expect(await sessions.setIfVersion(fenced, next, 0)).toBe(1);
    expect(await sessions.getVersioned(fenced)).toMatchObject({ value: next, version: 1 });
    expect(await shared.get(`${prefix}session:${fenced}`)).toMatch(/^#1:\d+:\d+:v1\./);
    expect(await shared.pttl(`${prefix}session:${fenced}`)).toBeGreaterThan(SESSION_TTL - 5000);

    const plain = randomDid();
    await writeLegacy(plain, sessionValue(plain), Date.now());
    await sessions.set(plain, sessionValue(plain));
    expect((await sessions.getVersioned(plain))?.version).toBe(1);

    const deleted = randomDid();
    await writeLegacy(deleted, sessionValue(deleted), Date.now());
    expect(await sessions.delIfVersion(deleted, 1)).toBe(false);
    expect(await sessions.delIfVersion(deleted, 0)).toBe(true);
    expect(await shared.exists(`${prefix}session:${deleted}`)).toBe(0);
  });

  it('sets the key TTL on fenced writes too, and leaves it alone when fenced out', async () => {
    const did = randomDid();
    await sessions.set(did, sessionValue(did));
    const key = `${prefix}session:${did}`;
    const { version } = (await sessions.getVersioned(did))!;
    await shared.pexpire(key, 10_000);
    expect(await sessions.setIfVersion(did, sessionValue(did), version - 1)).toBeUndefined();
    expect(await shared.pttl(key)).toBeLessThanOrEqual(10_000);
    expect(await sessions.setIfVersion(did, sessionValue(did), version)).toBe(version + 1);
    expect(await shared.pttl(key)).toBeGreaterThan(SESSION_TTL - 5000);
  });

  it('refuses a session value whose version header is malformed', async () => {
    const did = randomDid();
    await sessions.set(did, sessionValue(did));
    const key = `${prefix}session:${did}`;
    const stored = (await shared.get(key))!;
    await shared.set(key, stored.replace(/^#\d+:/, '#x:'));
    await expect(sessions.get(did)).rejects.toThrow(/malformed version header/);
  });

  it('sets the key TTL (PTTL) from the store TTL: retention for sessions, state lifetime for states', async () => {
    const did = randomDid();
    const stateKey = randomBytes(16).toString('base64url');
    await sessions.set(did, sessionValue(did));
    await states.set(stateKey, stateValue());
    const sessionPttl = await shared.pttl(`${prefix}session:${did}`);
    const statePttl = await shared.pttl(`${prefix}state:${stateKey}`);
    expect(sessionPttl).toBeLessThanOrEqual(SESSION_TTL);
    expect(sessionPttl).toBeGreaterThan(SESSION_TTL - 5000);
    expect(statePttl).toBeLessThanOrEqual(STATE_TTL);
    expect(statePttl).toBeGreaterThan(STATE_TTL - 5000);

    // A rewrite renews it.
    await shared.pexpire(`${prefix}session:${did}`, 10_000);
    await sessions.set(did, sessionValue(did));
    expect(await shared.pttl(`${prefix}session:${did}`)).toBeGreaterThan(SESSION_TTL - 5000);
  });

  it('refuses a value moved to another key: a session copied to another DID, a state renamed', async () => {
    const a = randomDid();
    const b = randomDid();
    await sessions.set(a, sessionValue(a));
    await shared.set(`${prefix}session:${b}`, (await shared.get(`${prefix}session:${a}`))!);
    await expect(sessions.get(b)).rejects.toBeInstanceOf(AtProtoDecryptionError);
    await expect(sessions.get(b)).rejects.toMatchObject({
      reason: 'authentication-failed',
      column: `redis:${prefix}session:${b}`,
    });

    const s1 = randomBytes(16).toString('base64url');
    const s2 = randomBytes(16).toString('base64url');
    await states.set(s1, stateValue());
    await shared.rename(`${prefix}state:${s1}`, `${prefix}state:${s2}`);
    await expect(states.get(s2)).rejects.toBeInstanceOf(AtProtoDecryptionError);
  });

  it('uses the key ring it is given instead of the installed one', async () => {
    const own = new KeyRing({ activeKeyId: 'own', keys: { own: randomKey() } });
    const store = new RedisSessionStore(shared, { ttlMs: 60_000, keyPrefix: prefix, keyRing: own });
    const did = randomDid();
    await store.set(did, sessionValue(did));
    expect(await shared.get(`${prefix}session:${did}`)).toMatch(/^#\d+:\d+:\d+:v1\.own\./);
    expect((await store.get(did))?.tokenSet.sub).toBe(did);
    await expect(sessions.get(did)).rejects.toMatchObject({ reason: 'unknown-key' });
  });

  it('rejects a bad configuration at construction', () => {
    expect(() => new RedisStateStore(shared, { ttlMs: 0 })).toThrow(/ttlMs/);
    expect(() => new RedisStateStore(shared, { ttlMs: 1000, keyPrefix: 'a b' })).toThrow(
      /keyPrefix/,
    );
  });
});

describe('Redis stores across a Redis restart', () => {
  let own: OwnRedis;
  const clients: Redis[] = [];
  beforeAll(async () => {
    own = await OwnRedis.start();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    await own?.stop();
  });

  /** A client that reconnects every 100 ms. */
  async function connect(options: Record<string, unknown>): Promise<Redis> {
    const client = new Redis(own.url, {
      retryStrategy: () => 100,
      disconnectTimeout: 50,
      ...options,
    });
    client.on('error', () => undefined);
    clients.push(client);
    if (client.status !== 'ready') await new Promise((r) => client.once('ready', r));
    return client;
  }

  async function stopAndWaitForClients(...cs: Redis[]): Promise<void> {
    await own.stop();
    for (let i = 0; i < 100 && cs.some((c) => c.status === 'ready'); i++) await sleep(20);
    for (const c of cs) expect(c.status).not.toBe('ready');
  }

  it.each([
    [
      'an offline queue disabled (fails fast: "Stream isn\'t writeable")',
      { enableOfflineQueue: false },
    ],
    ['maxRetriesPerRequest: 0 (MaxRetriesPerRequestError)', { maxRetriesPerRequest: 0 }],
  ])(
    'a session write while Redis is down and back within the budget succeeds, with %s',
    async (_, clientOptions) => {
      const client = await connect(clientOptions);
      const retried: unknown[] = [];
      const sessions = new RedisSessionStore(client, {
        ttlMs: 60_000,
        retry: { maxElapsedMs: 8000, maxAttempts: 12, onRetry: (e) => retried.push(e) },
      });
      const did = randomDid();
      await sessions.set(did, sessionValue(did));

      await stopAndWaitForClients(client);
      const value = sessionValue(did);
      const write = sessions.set(did, value);
      await sleep(400);
      await own.restart();
      await write;

      expect(retried.length).toBeGreaterThan(0);
      expect(retried.every(isTransientDatabaseError)).toBe(true);
      expect(await sessions.get(did)).toEqual(value);
    },
  );

  it('fails with AtProtoStoreError (cause: the Redis error) when Redis stays down past the budget', async () => {
    const client = await connect({ enableOfflineQueue: false });
    const states = new RedisStateStore(client, {
      ttlMs: 60_000,
      retry: { maxElapsedMs: 300, baseDelayMs: 20 },
    });
    await stopAndWaitForClients(client);
    try {
      const error = await states.set('some-state', stateValue()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(AtProtoStoreError);
      expect((error as Error).message).toMatch(/Saving an OAuth state to Redis failed after/);
      expect(isTransientDatabaseError((error as Error).cause)).toBe(true);
    } finally {
      await own.restart();
    }
  });

  it('does not retry a non-transient Redis error', async () => {
    const client = await connect({});
    await client.hset('wrong-state:type', 'f', 'v');
    let retries = 0;
    const states = new RedisStateStore(client, {
      ttlMs: 60_000,
      keyPrefix: 'wrong-',
      retry: { onRetry: () => retries++ },
    });
    // GET on a hash: WRONGTYPE, a ReplyError that is not transient.
    await expect(states.get('type')).rejects.toThrow(/WRONGTYPE/);
    expect(retries).toBe(0);
  });
});

describe('Redis session store: writes whose reply was lost', () => {
  // A proxy in front of a redis-server of the test's own forwards the script, swallows
  // Redis' reply and cuts the connection: the write ran, the client saw a lost connection.
  // ioredis then either resends the command itself on reconnect (its default,
  // autoResendUnfulfilledCommands) or fails it, and the store retries it: either way the
  // script runs a second time, and must answer what the first run did.
  let own: OwnRedis;
  let proxy: CuttingProxy;
  const clients: Redis[] = [];
  beforeAll(async () => {
    own = await OwnRedis.start();
    proxy = await CuttingProxy.start({ host: '127.0.0.1', port: own.port });
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await proxy?.close();
    await own?.stop();
  });

  async function connect(options: Record<string, unknown>): Promise<Redis> {
    const client = new Redis(proxy.port, '127.0.0.1', { retryStrategy: () => 50, ...options });
    client.on('error', () => undefined);
    clients.push(client);
    if (client.status !== 'ready') await new Promise((r) => client.once('ready', r));
    return client;
  }

  it.each([
    ['ioredis resends the command on reconnect', {}],
    [
      'the command fails and the store retries it',
      { autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 0 },
    ],
  ])('setIfVersion resolves the version it wrote, not "fenced out", when %s', async (_, opts) => {
    const client = await connect(opts);
    const retried: unknown[] = [];
    const store = new RedisSessionStore(client, {
      ttlMs: 60_000,
      retry: { baseDelayMs: 20, onRetry: (e) => retried.push(e) },
    });
    const did = randomDid();
    await store.set(did, sessionValue(did));
    const { version } = (await store.getVersioned(did))!;
    const next = sessionValue(did);
    const cut = proxy.cutNext(/expires <= tonumber/, 'after-reply');
    expect(await store.setIfVersion(did, next, version)).toBe(version + 1);
    await cut;
    expect(await store.getVersioned(did)).toMatchObject({ value: next, version: version + 1 });
    // A plain set whose reply is lost moves the version once, not twice.
    const cutSet = proxy.cutNext(/version = version \+ 1 else/, 'after-reply');
    await store.set(did, sessionValue(did));
    await cutSet;
    expect((await store.getVersioned(did))?.version).toBe(version + 2);
    if ('maxRetriesPerRequest' in opts) expect(retried.length).toBeGreaterThanOrEqual(2);
  });

  it('delIfVersion resolves true when its reply was lost and the store retried it', async () => {
    const client = await connect({ autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 0 });
    const retried: unknown[] = [];
    const store = new RedisSessionStore(client, {
      ttlMs: 60_000,
      retry: { baseDelayMs: 20, onRetry: (e) => retried.push(e) },
    });
    const did = randomDid();
    await store.set(did, sessionValue(did));
    const { version } = (await store.getVersioned(did))!;
    const cut = proxy.cutNext(/redis.call\('DEL'/, 'after-reply');
    expect(await store.delIfVersion(did, version)).toBe(true);
    await cut;
    expect(retried.length).toBeGreaterThanOrEqual(1);
    expect(await store.get(did)).toBeUndefined();
  });
});

describe('transient Redis errors', () => {
  it('recognizes ioredis connection errors and Redis "try again" replies, not other replies', () => {
    const reply = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });
    const named = (name: string, message: string) => Object.assign(new Error(message), { name });
    for (const e of [
      new Error('Connection is closed.'),
      new Error("Stream isn't writeable and enableOfflineQueue options is false"),
      new Error('Command timed out'),
      named('MaxRetriesPerRequestError', 'Reached the max retries per request limit (which is 1).'),
      reply('LOADING Redis is loading the dataset in memory'),
      reply("READONLY You can't write against a read only replica."),
      reply('TRYAGAIN Multiple keys request during rehashing of slot'),
      reply('CLUSTERDOWN The cluster is down'),
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
    ]) {
      expect([e.message, isTransientDatabaseError(e)]).toEqual([e.message, true]);
    }
    for (const e of [
      reply('WRONGTYPE Operation against a key holding the wrong kind of value'),
      reply('ERR syntax error'),
      reply('NOAUTH Authentication required.'),
      new Error('READONLY without being a ReplyError'),
      new Error('attempt to write a readonly database'),
    ]) {
      expect([e.message, isTransientDatabaseError(e)]).toEqual([e.message, false]);
    }
  });
});

describe('loading without ioredis', () => {
  it('has no value import of ioredis in any file reachable from lib/index.ts', () => {
    const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'lib');
    const seen = new Set<string>();
    const offending: string[] = [];
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest);
      for (const node of source.statements) {
        if (!ts.isImportDeclaration(node) && !ts.isExportDeclaration(node)) continue;
        const spec = node.moduleSpecifier;
        if (!spec || !ts.isStringLiteral(spec)) continue;
        const typeOnly = ts.isImportDeclaration(node)
          ? isTypeOnlyImport(node)
          : node.isTypeOnly ||
            (!!node.exportClause &&
              ts.isNamedExports(node.exportClause) &&
              node.exportClause.elements.every((e) => e.isTypeOnly));
        if (spec.text.startsWith('.')) {
          if (!typeOnly) visit(join(dirname(file), spec.text.replace(/\.js$/, '.ts')));
        } else if (
          /^(ioredis|redlock|bullmq|@atproto-labs\/simple-store-redis)(\/|$)/.test(spec.text) &&
          !typeOnly
        ) {
          offending.push(`${file}: ${spec.text}`);
        }
      }
    };
    visit(join(root, 'index.ts'));
    expect(seen.has(join(root, 'storage', 'redis', 'redis.stores.ts'))).toBe(true);
    expect(seen.has(join(root, 'storage', 'redis', 'redis-caches.ts'))).toBe(true);
    expect(offending).toEqual([]);
  });
});

function isTypeOnlyImport(node: ts.ImportDeclaration): boolean {
  const clause = node.importClause;
  if (!clause) return false; // a side-effect import
  if (clause.isTypeOnly) return true;
  if (clause.name) return false;
  const bindings = clause.namedBindings;
  return !!bindings && ts.isNamedImports(bindings) && bindings.elements.every((e) => e.isTypeOnly);
}
