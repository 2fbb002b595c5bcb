/**
 * A Redis that accepts connections but answers nothing (`CLIENT PAUSE ... ALL`, as during a
 * stall): a short stall during a lock extension is survived, and during a long one the
 * session lock and the Redis stores give up in bounded time instead of hanging, and so does
 * every caller queued behind them. On a redis-server of the test's own.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import {
  AtProtoStoreError,
  AtProtoLockError,
  RedlockRequestLock,
  type RedlockLockLike,
  RedisSessionStore,
} from 'nestjs-atproto-auth';
import {
  createLockConnection,
  createRedlockRequestLock,
  LOCK_COMMAND_TIMEOUT_MS,
  type RedisClientLike,
} from '../../lib/redis/redis-lock.factory.js';
import { OwnRedis } from '../support/redis-server.js';
import { loadRedlock, settle } from './helpers.js';

/** The stores' default retry budget (TransientRetryOptions.maxElapsedMs). */
const STORE_RETRY_BUDGET_MS = 5000;
/** Longer than anything below may take, so that the server never resumes during the test. */
const PAUSE_MS = 120_000;
/** What "hangs" means here: still pending after this long. */
const CAP_MS = 20_000;

let redis: OwnRedis;
let connection: RedisClientLike;
const connections: RedisClientLike[] = [];

beforeAll(async () => {
  redis = await OwnRedis.start();
  connection = await createLockConnection(redis.url);
  connections.push(connection);
});
afterAll(async () => {
  // A paused server never answers QUIT: drop the connections, then kill the server.
  for (const c of connections) c.disconnect();
  await redis?.stop();
});

async function pauseRedis(ms: number): Promise<void> {
  const side = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  try {
    await side.call('CLIENT', 'PAUSE', String(ms), 'ALL');
  } finally {
    side.disconnect();
  }
}

// Runs first, while the server still answers (the next block pauses it for good).
describe('a stall longer than the command timeout during a lock extension', () => {
  it('the extension times out, the lock is re-asserted as soon as Redis answers, and both the key and the lease live on', async () => {
    // Redis stalls for 1.6 s just as the first extension is sent, with a 1 s command
    // timeout: the extension times out at 1 s, the re-assertion sent then is answered when
    // the stall ends, 0.6 s later and 0.4 s within its own timeout. The TTL leaves 1.4 s to
    // spare after that (extension at 2.5 s, answered at about 4.1 s, expiry at 5 s).
    const commandTimeoutMs = 1000;
    const stallMs = 1600;
    const ttlMs = 5000;
    const own = await createLockConnection(redis.url, { commandTimeoutMs });
    connections.push(own);
    const Redlock = await loadRedlock();
    let stalled = false;
    const extensionErrors: string[] = [];
    let value: string | undefined;
    const lock = new RedlockRequestLock(
      (settings) => {
        const real = new Redlock([own], settings);
        return {
          on: (event, listener) => real.on(event, listener),
          acquire: async (resources, durationMs) => {
            const held = (await real.acquire(resources, durationMs)) as RedlockLockLike & {
              value: string;
            };
            value = held.value;
            const extend = held.extend.bind(held);
            held.extend = async (ms) => {
              if (!stalled) {
                stalled = true;
                await pauseRedis(stallMs);
              }
              try {
                return await extend(ms);
              } catch (error) {
                extensionErrors.push((error as Error).message);
                throw error;
              }
            };
            return held;
          },
        };
      },
      { keyPrefix: 'short:', ttlMs, acquireTimeoutMs: 20_000, commandTimeoutMs, redis: own },
    );
    const side = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    try {
      const seen = await lock.run('n', async (lease) => {
        await sleep(1.5 * ttlMs); // past the expiry the acquisition set
        return {
          stored: await side.get('short:n'),
          pttl: await side.pttl('short:n'),
          remaining: lease.remainingMs(),
        };
      });
      expect(stalled).toBe(true);
      // redlock saw no quorum: its one vote timed out.
      expect(extensionErrors).toEqual([expect.stringMatching(/quorum/)]);
      expect(seen.stored).toBe(value);
      expect(seen.pttl).toBeGreaterThan(0);
      expect(seen.remaining).toBeGreaterThan(0);
    } finally {
      side.disconnect();
    }
  }, 30_000);
});

describe('a stalled Redis (connected, silent)', () => {
  const acquireTimeoutMs = 3000;
  let lock: Awaited<ReturnType<typeof createRedlockRequestLock>>;
  let store: RedisSessionStore;

  beforeAll(async () => {
    lock = await createRedlockRequestLock(connection, 'stall:', { acquireTimeoutMs });
    store = new RedisSessionStore(connection, { ttlMs: 60_000, keyPrefix: 'stall:' });
    // Both work while Redis answers.
    expect(await lock.run('n', () => 'ok')).toBe('ok');
    expect(await store.get('did:plc:abcdefghijklmnopqrstuvwx')).toBeUndefined();
    await pauseRedis(PAUSE_MS);
  });

  it('lock.run() and a second run() queued behind it for the same name both reject with AtProtoLockError within acquireTimeoutMs + 1 s', async () => {
    const first = settle(
      lock.run('n', () => 'never'),
      CAP_MS,
    );
    const second = settle(
      lock.run('n', () => 'never'),
      CAP_MS,
    );
    for (const outcome of await Promise.all([first, second])) {
      expect(outcome).toMatchObject({ state: 'rejected' });
      expect((outcome as { error: unknown }).error).toBeInstanceOf(AtProtoLockError);
      expect(outcome.ms).toBeLessThan(acquireTimeoutMs + 1000);
    }
  }, 60_000);

  it('RedisSessionStore.get rejects within its retry budget plus one command timeout', async () => {
    // "Command timed out" is transient to the store: it retries, but starts no attempt past
    // its budget, and each attempt ends within the connection's command timeout.
    const outcome = await settle(store.get('did:plc:abcdefghijklmnopqrstuvwx'), CAP_MS);
    expect(outcome).toMatchObject({ state: 'rejected' });
    const { error } = outcome as { error: Error & { cause?: Error } };
    expect(error).toBeInstanceOf(AtProtoStoreError);
    expect(error.cause?.message).toMatch(/^Command timed out/);
    expect(outcome.ms).toBeLessThan(STORE_RETRY_BUDGET_MS + LOCK_COMMAND_TIMEOUT_MS + 1000);
  }, 60_000);
});
