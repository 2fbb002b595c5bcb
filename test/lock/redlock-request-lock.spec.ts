/** The distributed session lock against real Redis servers. */
import { setTimeout as sleep } from 'node:timers/promises';
import { AtProtoLockError, RedlockRequestLock } from 'nestjs-atproto-auth';
import { noRefreshScope } from '../../lib/lock/lock-scope.js';
import {
  createLockConnection,
  createRedlockRequestLock,
  type RedisClientLike,
} from '../../lib/redis/redis-lock.factory.js';
import { OwnRedis } from '../support/redis-server.js';

const connections: RedisClientLike[] = [];
const scope = (lockName: string) => ({ lockName, did: 'did:plc:x', session: {} as never });
async function lockOn(url: string): Promise<RedlockRequestLock> {
  const connection = await createLockConnection(url);
  connections.push(connection);
  return createRedlockRequestLock(connection);
}
afterAll(async () => {
  // quit() closes cleanly; a connection to a stopped server fails fast and is dropped.
  await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
});

describe('RedlockRequestLock', () => {
  it('lets one holder at a time run, across instances (two connections to one Redis)', async () => {
    const a = await lockOn('redis://127.0.0.1:6379');
    const b = await lockOn('redis://127.0.0.1:6379');
    const name = `test-${Date.now()}-${Math.random()}`;
    let inside = 0;
    let maxInside = 0;
    let done = 0;
    await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        (i % 2 ? a : b).run(name, async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await sleep(5);
          inside--;
          done++;
        }),
      ),
    );
    expect(done).toBe(24);
    expect(maxInside).toBe(1);
  });

  it('keeps the lock past its TTL while the work runs (auto-extension)', async () => {
    const connection = await createLockConnection('redis://127.0.0.1:6379');
    connections.push(connection);
    // @ts-expect-error -- redlock 5's typings do not resolve through its exports (see RedlockLike).
    const { default: Redlock } = await import('redlock');
    const make = (ttlMs: number) =>
      new RedlockRequestLock((s) => new Redlock([connection as never], s) as never, {
        ttlMs,
        acquireTimeoutMs: 5000,
        retryDelayMs: 20,
      });
    const holder = make(300);
    const other = make(300);
    const name = `extend-${Date.now()}`;
    const order: string[] = [];
    const long = holder.run(name, async () => {
      order.push('holder:start');
      await sleep(1200); // four TTLs
      order.push('holder:end');
    });
    await sleep(50);
    await other.run(name, async () => {
      order.push('other');
    });
    await long;
    expect(order).toEqual(['holder:start', 'holder:end', 'other']);
  });

  it('fails fast and cleanly when Redis is down, but lets marked no-refresh work through', async () => {
    const redis = await OwnRedis.start();
    try {
      const lock = await lockOn(redis.url);
      expect(await lock.run('n', async () => 'ok')).toBe('ok');
      await redis.stop();
      const started = Date.now();
      await expect(lock.run('n', async () => 'never')).rejects.toBeInstanceOf(AtProtoLockError);
      expect(Date.now() - started).toBeLessThan(10_000); // no hanging on an offline queue
      // A call marked as unable to refresh skips Redis altogether.
      expect(await noRefreshScope.run(scope('n'), () => lock.run('n', async () => 'read'))).toBe(
        'read',
      );
      // The mark is per lock name.
      await expect(
        noRefreshScope.run(scope('other'), () => lock.run('n', async () => 'x')),
      ).rejects.toBeInstanceOf(AtProtoLockError);
    } finally {
      await redis.stop();
    }
  }, 60_000);
});
