/**
 * Revocations between instances, inside one process: each "instance" has its own
 * invalidation subscriber, heartbeats and revocation cursor, over shared stores and a
 * redis-server of the test's own (stopped, restarted and put behind a proxy here).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { CURSOR_LIMIT } from '../../lib/invalidation/cache-invalidation.js';
import type { InvalidationEvent } from '../../lib/invalidation/invalidation-message.js';
import { OwnRedis } from '../support/redis-server.js';
import { TcpProxy } from './support/tcp-proxy.js';
import {
  DID,
  type Instance,
  SharedKeys,
  SharedSessions,
  startInstance,
  trusted,
  within,
} from './support/world.js';

let redis: OwnRedis;
const open: Array<{ close(): Promise<void> }> = [];

beforeAll(async () => {
  redis = await OwnRedis.start();
});
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close().catch(() => undefined);
  if (!(await ping())) await redis.restart();
});
afterAll(async () => {
  await redis?.stop();
});

async function ping(): Promise<boolean> {
  const c = new Redis(redis.url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
  c.on('error', () => undefined);
  try {
    return (await c.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    c.disconnect();
  }
}

async function pair(opts: { cacheTtlMs?: number; subscriberUrlB?: string } = {}) {
  const shared = { sessions: new SharedSessions(), keys: new SharedKeys() };
  const a = await startInstance(shared, { subscriberUrl: redis.url, publisherUrl: redis.url });
  const b = await startInstance(
    shared,
    { subscriberUrl: opts.subscriberUrlB ?? redis.url, publisherUrl: redis.url },
    opts.cacheTtlMs,
  );
  open.push(a, b);
  await Promise.all([trusted(a), trusted(b)]);
  return { shared, a, b };
}

/** Signs in through A; B validates it (one store read) and keeps it. */
async function cachedOnB(shared: { sessions: SharedSessions }, a: Instance, b: Instance) {
  const { token, session } = await a.sessions.create(DID);
  expect(await b.sessions.validate(token)).toBeDefined();
  const reads = shared.sessions.reads;
  expect(await b.sessions.validate(token)).toBeDefined();
  expect(shared.sessions.reads).toBe(reads); // cached
  return { token, id: session.id };
}

function eventsOf(instance: Instance): InvalidationEvent[] {
  const seen: InvalidationEvent[] = [];
  instance.bus.listen({ invalidated: (e) => seen.push(e), dropAll: () => undefined });
  return seen;
}

describe('through the Redis channel', () => {
  it('a session revoked on A is refused by B at once, even when the cursor sees nothing', async () => {
    const { shared, a, b } = await pair();
    b.store.cursor = 'blind'; // only the channel can tell B
    const { token, id } = await cachedOnB(shared, a, b);
    expect(await a.sessions.revoke(id)).toBe(true);
    await within(
      1000,
      'B refuses the revoked session',
      async () => !(await b.sessions.validate(token)),
    );
  });

  it('log out everywhere and an API key revoked on A reach B the same way', async () => {
    const { shared, a, b } = await pair();
    b.store.cursor = 'blind';
    const one = await cachedOnB(shared, a, b);
    const two = await cachedOnB(shared, a, b);
    expect(await a.sessions.revokeAll(DID)).toBe(2);
    await within(1000, 'B refuses both sessions of the DID', async () => {
      return !(await b.sessions.validate(one.token)) && !(await b.sessions.validate(two.token));
    });
    // A session created after the log out everywhere is not affected on B.
    await sleep(5);
    const fresh = await a.sessions.create(DID);
    expect(await b.sessions.validate(fresh.token)).toBeDefined();

    const { key, info } = await a.keys.create(DID, { name: 'bot' });
    expect(await b.keys.validate(key)).toBeDefined();
    const reads = shared.keys.reads;
    expect(await b.keys.validate(key)).toBeDefined();
    expect(shared.keys.reads).toBe(reads);
    expect(await a.keys.revoke(info.id, { did: DID })).toBe(true);
    await within(1000, 'B refuses the revoked key', async () => !(await b.keys.validate(key)));
  });

  it('an invalidation received while a validation reads the store: the read neither caches nor accepts the row', async () => {
    const { shared, a, b } = await pair();
    b.store.cursor = 'blind';
    const seen = eventsOf(b);
    const { token, session } = await a.sessions.create(DID);
    let release!: () => void;
    b.store.gate = new Promise<void>((r) => (release = r));
    const inFlight = b.sessions.validate(token); // reads the row (active), then waits
    await sleep(20);
    expect(await a.sessions.revoke(session.id)).toBe(true);
    await within(1000, 'B received the invalidation', () =>
      seen.some((e) => e.kind === 'session' && e.id === session.id),
    );
    release();
    expect(await inFlight).toBeUndefined();
    b.store.gate = undefined;
    const reads = shared.sessions.reads;
    expect(await b.sessions.validate(token)).toBeUndefined();
    expect(shared.sessions.reads).toBe(reads + 1); // nothing was cached: read again
  });

  it('messages carry a kind and an id or a DID, never a token or a key', async () => {
    const { a } = await pair();
    const spy = new Redis(redis.url);
    open.push({ close: async () => spy.disconnect() });
    const messages: string[] = [];
    spy.on('message', (_channel: string, m: string) => messages.push(m));
    await spy.subscribe('inv:invalidate');
    const s = await a.sessions.create(DID);
    const k = await a.keys.create(DID, { name: 'bot' });
    await a.sessions.revoke(s.session.id);
    await a.keys.revoke(k.info.id, { did: DID });
    await a.sessions.create(DID);
    await a.sessions.revokeAll(DID);
    await within(
      1000,
      'three revocations published',
      () => messages.filter((m) => !m.includes('heartbeat')).length >= 3,
    );
    const revocations = messages.filter((m) => !m.includes('heartbeat')).map((m) => JSON.parse(m));
    expect(revocations).toEqual([
      { v: 1, kind: 'session', id: s.session.id },
      { v: 1, kind: 'key', id: k.info.id },
      { v: 1, kind: 'did', did: DID, at: expect.any(Number) },
    ]);
    for (const m of messages) {
      expect(m).not.toContain(s.token);
      expect(m).not.toContain(k.key);
    }
  });
});

describe('when the channel fails', () => {
  it('Redis stops: B drops its long entries and caches for cacheTtl only; Redis back: the long lifetime again', async () => {
    const { shared, a, b } = await pair({ cacheTtlMs: 1000 });
    const { token } = await cachedOnB(shared, a, b);
    await sleep(1100);
    let reads = shared.sessions.reads;
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads); // older than cacheTtl, still cached: long

    await redis.stop();
    await within(1000, 'B stops trusting the channel', () => !b.bus.state().trusted);
    reads = shared.sessions.reads;
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads + 1); // the long entry was dropped
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads + 1); // cached again, for cacheTtl
    await sleep(1100);
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads + 2); // cacheTtl, not longer

    await redis.restart();
    await trusted(b);
    reads = shared.sessions.reads;
    await sleep(1100); // the short entry ages out
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads + 1);
    await sleep(1100);
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads + 1); // long again
  }, 30_000);

  it('a subscriber that goes silent without an error (half-open) is noticed (500 ms without its heartbeat) and replaced', async () => {
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: redis.port });
    open.push(proxy);
    const { shared, a, b } = await pair({ subscriberUrlB: proxy.url });
    const { token } = await cachedOnB(shared, a, b);
    const connections = proxy.accepted;
    proxy.blackhole(); // B's subscriber hears nothing more, and nothing tells it
    // 500 ms without an own heartbeat, plus a 250 ms tick, plus slack for a loaded machine.
    await within(1500, 'B stops trusting the silent channel', () => !b.bus.state().trusted);
    const reads = shared.sessions.reads;
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads + 1); // the long entry was dropped
    // Redis still takes B's heartbeats (its lock connection is fine), none comes back: B
    // drops the silent connection and opens a new one (RESUBSCRIBE_AFTER_MS, 1.5 s).
    await within(5000, 'B reconnects its subscriber', () => proxy.accepted > connections);
    expect(b.bus.state().trusted).toBe(false); // the new connection is blackholed too
    proxy.pass();
    await trusted(b, 15_000);
  }, 30_000);

  it('a message published while B is not subscribed is caught by the cursor', async () => {
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: redis.port });
    open.push(proxy);
    const { shared, a, b } = await pair({ subscriberUrlB: proxy.url, cacheTtlMs: 60_000 });
    const { token, id } = await cachedOnB(shared, a, b);
    proxy.cutSubscribers();
    await within(1000, 'B unsubscribed', () => b.bus.state().channel === 'down');
    expect(await b.sessions.validate(token)).toBeDefined(); // read again, cached for cacheTtl
    expect(await a.sessions.revoke(id)).toBe(true); // published: B does not hear it
    // CURSOR_PROOF_MS (2 s) is the bound; 2 s of slack for a loaded machine.
    await within(
      4000,
      'B refuses the revoked session',
      async () => !(await b.sessions.validate(token)),
    );
  }, 30_000);
});

describe('the revocation cursor', () => {
  it('without Redis, it carries revocations made straight in the database, within 2 s', async () => {
    const shared = { sessions: new SharedSessions(), keys: new SharedKeys() };
    const a = await startInstance(shared, undefined);
    const b = await startInstance(shared, undefined);
    open.push(a, b);
    await trusted(b);
    const { token, id } = await cachedOnB(shared, a, b);
    await sleep(1100);
    const reads = shared.sessions.reads;
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads); // long entry
    await shared.sessions.revoke(id, new Date()); // SQL, another tool: no message at all
    // CURSOR_PROOF_MS (2 s) is the bound; 2 s of slack for a loaded machine.
    await within(
      4000,
      'B refuses the revoked session',
      async () => !(await b.sessions.validate(token)),
    );
  }, 20_000);

  it('a cursor that fails stops the long lifetime: entries dropped, cacheTtl applies', async () => {
    const { shared, a, b } = await pair();
    const { token } = await cachedOnB(shared, a, b);
    b.store.cursor = 'failing';
    await within(3500, 'B stops trusting', () => !b.bus.state().trusted);
    const reads = shared.sessions.reads;
    expect(await b.sessions.validate(token)).toBeDefined();
    expect(shared.sessions.reads).toBe(reads + 1);
    b.store.cursor = 'normal';
    await trusted(b);
  }, 20_000);

  it('more revocations than one poll reads: every entry is dropped', async () => {
    const { shared, a, b } = await pair();
    const { token } = await cachedOnB(shared, a, b);
    const at = new Date();
    for (let i = 0; i < CURSOR_LIMIT; i++) {
      const id = i.toString(16).padStart(64, '0');
      await shared.sessions.create({
        id,
        did: DID,
        createdAt: at,
        expiresAt: new Date(at.getTime() + 60_000),
        lastSeenAt: at,
        revokedAt: null,
        userAgent: null,
      });
      await shared.sessions.revoke(id, at);
    }
    const reads = shared.sessions.reads;
    await within(4000, 'B dropped its entries', async () => {
      await b.sessions.validate(token);
      return shared.sessions.reads > reads;
    });
  }, 20_000);
});

it('shutdown closes the subscriber connection', async () => {
  const shared = { sessions: new SharedSessions(), keys: new SharedKeys() };
  const a = await startInstance(shared, { subscriberUrl: redis.url, publisherUrl: redis.url });
  await trusted(a);
  const names = async () => {
    const c = new Redis(redis.url);
    try {
      return String(await c.call('CLIENT', 'LIST'));
    } finally {
      c.disconnect();
    }
  };
  expect(await names()).toContain('name=atproto-invalidation');
  await a.close();
  await within(
    2000,
    'subscriber gone',
    async () => !(await names()).includes('atproto-invalidation'),
  );
});
