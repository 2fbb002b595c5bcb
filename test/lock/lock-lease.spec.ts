/**
 * The lease the distributed session lock hands its holder, and how the lock survives a
 * failed extension: on the shared Redis, under a key prefix of this file's own.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import {
  RedlockRequestLock,
  type RedlockLike,
  type RedlockLockLike,
  type RedlockSettings,
} from 'nestjs-atproto-auth';
import { noRefreshScope } from '../../lib/lock/lock-scope.js';
import {
  createLockConnection,
  createRedlockRequestLock,
  type RedisClientLike,
} from '../../lib/redis/redis-lock.factory.js';
import { loadRedlock } from './helpers.js';

const URL = 'redis://127.0.0.1:6379';
const PREFIX = `nestjs-atproto-auth-test:${process.pid}:${randomBytes(6).toString('hex')}:`;
const LOCK_PREFIX = `${PREFIX}lock:`;
const side = new Redis(URL, { maxRetriesPerRequest: 2 });
const connections: RedisClientLike[] = [];

async function connect(): Promise<RedisClientLike> {
  const connection = await createLockConnection(URL);
  connections.push(connection);
  return connection;
}
afterAll(async () => {
  const keys = await side.keys(`${PREFIX}*`);
  if (keys.length > 0) await side.del(...keys);
  await side.quit();
  await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
});

describe('the lease of RedlockRequestLock', () => {
  it('counts down from about the TTL, is renewed by the extensions, and is 0 in the no-refresh scope', async () => {
    const connection = await connect();
    const lock = await createRedlockRequestLock(connection, PREFIX, { ttlMs: 10_000 });
    const [first, second] = await lock.run(`countdown-${Date.now()}`, async (lease) => {
      const a = lease.remainingMs();
      await sleep(200);
      return [a, lease.remainingMs()];
    });
    expect(first).toBeLessThanOrEqual(10_000);
    expect(first).toBeGreaterThan(8000);
    expect(second).toBeLessThan(first!);
    expect(second).toBeGreaterThan(0);

    const short = await createRedlockRequestLock(connection, PREFIX, { ttlMs: 1000 });
    // Past one and a half TTLs the lease is still there: the extensions renewed it.
    const later = await short.run(`renewed-${Date.now()}`, async (lease) => {
      await sleep(1600);
      return lease.remainingMs();
    });
    expect(later).toBeGreaterThan(0);
    expect(later).toBeLessThanOrEqual(1000);

    // No Redis lock is taken in the no-refresh scope: nothing is held.
    const scope = { lockName: 'n', did: 'did:plc:x', session: {} as never };
    expect(
      await noRefreshScope.run(scope, () => lock.run('n', (lease) => lease.remainingMs())),
    ).toBe(0);
  });

  it('recovers from a failed extension through Redis: the key is renewed, the lease goes on, no other instance gets in while the work runs', async () => {
    const Redlock = await loadRedlock();
    const holderConnection = await connect();
    const otherConnection = await connect();
    const ttlMs = 1000;
    // The first extension reaches Redis and is applied, but its answer is lost (what a
    // command timeout looks like when Redis answers late): redlock rejects, and the Lock
    // object it had is no longer valid for redlock (it invalidates it on every extension).
    let forced = false;
    let value: string | undefined;
    const losingFirstAnswer = (settings: RedlockSettings): RedlockLike => {
      const real = new Redlock([holderConnection], settings);
      return {
        on: (event, listener) => real.on(event, listener),
        acquire: async (resources, durationMs) => {
          const lock = (await real.acquire(resources, durationMs)) as RedlockLockLike & {
            value: string;
          };
          value = lock.value;
          const extend = lock.extend.bind(lock);
          lock.extend = async (ms) => {
            forced = true;
            await extend(ms);
            throw new Error('Command timed out');
          };
          return lock;
        },
      };
    };
    const holder = new RedlockRequestLock(losingFirstAnswer, {
      keyPrefix: LOCK_PREFIX,
      ttlMs,
      acquireTimeoutMs: 15_000,
      redis: holderConnection,
    });
    const other = await createRedlockRequestLock(otherConnection, PREFIX, {
      ttlMs,
      acquireTimeoutMs: 15_000,
    });
    const name = `recover-${Date.now()}`;
    const key = `${LOCK_PREFIX}${name}`;
    const order: string[] = [];
    let midway: { stored: string | null; pttl: number; remaining: number } | undefined;
    const long = holder.run(name, async (lease) => {
      order.push('holder:start');
      // Well past the key's expiry as set by the acquisition (1 TTL) and by the extension
      // whose answer was lost (1.5 TTLs): only the recovery keeps the key alive.
      await sleep(2.5 * ttlMs);
      midway = {
        stored: await side.get(key),
        pttl: await side.pttl(key),
        remaining: lease.remainingMs(),
      };
      await sleep(ttlMs); // 3.5 TTLs in all
      order.push('holder:end');
    });
    await sleep(100);
    await other.run(name, () => {
      order.push('other');
    });
    await long;
    expect(forced).toBe(true);
    expect(midway).toEqual({
      stored: value,
      pttl: expect.any(Number),
      remaining: expect.any(Number),
    });
    expect(midway!.pttl).toBeGreaterThan(0);
    expect(midway!.remaining).toBeGreaterThan(0);
    expect(midway!.remaining).toBeLessThanOrEqual(ttlMs);
    expect(order).toEqual(['holder:start', 'holder:end', 'other']);
  }, 30_000);

  it('does not steal back a key taken over by someone else, and its lease drops to 0 within one extension period', async () => {
    const connection = await connect();
    const ttlMs = 6000; // extension period 3 s; the lease would run out by itself at ~6 s
    const lock = await createRedlockRequestLock(connection, PREFIX, {
      ttlMs,
      acquireTimeoutMs: ttlMs,
    });
    const name = `takeover-${Date.now()}`;
    const key = `${LOCK_PREFIX}${name}`;
    let takenOverAt = 0;
    let droppedAt = 0;
    await lock.run(name, async (lease) => {
      // The key expired and another holder took it (simulated: delete and set anew).
      await side.del(key);
      await side.set(key, 'someone-else', 'PX', 60_000);
      takenOverAt = Date.now();
      while (lease.remainingMs() > 0 && Date.now() - takenOverAt < 2 * ttlMs) await sleep(20);
      droppedAt = Date.now();
      // Once lost, it stays lost.
      await sleep(ttlMs / 2 + 200);
      expect(lease.remainingMs()).toBe(0);
    });
    expect(droppedAt - takenOverAt).toBeLessThan(ttlMs / 2 + 1000);
    await sleep(300); // the release runs in the background
    expect(await side.get(key)).toBe('someone-else');
    expect(await side.pttl(key)).toBeGreaterThan(ttlMs);
  }, 30_000);
});
