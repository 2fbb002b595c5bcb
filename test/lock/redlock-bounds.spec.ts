/**
 * Bounds of RedlockRequestLock that a real Redis cannot be made to show on its own: a
 * release that never settles (Redis cannot be made to hang on one command only), and an
 * acquisition that succeeds only after its caller gave up. A fake redlock stands in.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AtProtoLockError,
  RedlockRequestLock,
  type RedlockLike,
  type RedlockLockLike,
} from 'nestjs-atproto-auth';
import { settle } from './helpers.js';

function fakeRedlock(lock: () => Promise<RedlockLockLike>): RedlockLike {
  return { acquire: () => lock(), on: () => undefined };
}

describe('RedlockRequestLock bounds', () => {
  it('does not hold back the result of run() on a release that never settles', async () => {
    let releases = 0;
    const lock = new RedlockRequestLock(() =>
      fakeRedlock(async () => ({
        value: 'v',
        extend: () => new Promise<never>(() => undefined),
        release: () => {
          releases++;
          return new Promise<never>(() => undefined);
        },
      })),
    );
    expect(
      await settle(
        lock.run('n', () => 'done'),
        5000,
      ),
    ).toMatchObject({
      state: 'fulfilled',
      value: 'done',
      ms: expect.any(Number),
    });
    // ...nor the next holder of the same name.
    const next = await settle(
      lock.run('n', () => 'next'),
      5000,
    );
    expect(next).toMatchObject({ state: 'fulfilled', value: 'next' });
    expect(next.ms).toBeLessThan(1000);
    expect(releases).toBe(2);
  });

  it('gives up on an acquisition still pending at the deadline, and releases it if it succeeds later', async () => {
    const released: string[] = [];
    const lock = new RedlockRequestLock(
      () =>
        fakeRedlock(async () => {
          await sleep(1500);
          return {
            value: 'late',
            extend: () => Promise.reject(new Error('unused')),
            release: async () => {
              released.push('late');
            },
          };
        }),
      { acquireTimeoutMs: 300 },
    );
    let ran = false;
    const outcome = await settle(
      lock.run('n', () => {
        ran = true;
      }),
      5000,
    );
    expect(outcome).toMatchObject({ state: 'rejected' });
    expect((outcome as { error: unknown }).error).toBeInstanceOf(AtProtoLockError);
    expect(outcome.ms).toBeLessThan(300 + 1000);
    expect(ran).toBe(false);
    // The acquisition lands after the caller left: nobody will use that lock, so it is
    // released rather than left to block everyone for a TTL.
    await sleep(2000);
    expect(released).toEqual(['late']);
  });
});

describe('the lease of RedlockRequestLock', () => {
  it('stays at 0 once it ran out, even if a late answer then confirms an extension', async () => {
    // TTL 1 s: the lease runs out at about 988 ms; the extension sent at 500 ms is answered
    // 600 ms later (within the 1.5 s command timeout), when the lease has run out: taken
    // alone, that answer would make the lock look held until about 1488 ms.
    const lock = new RedlockRequestLock(
      () =>
        fakeRedlock(async () => {
          const held: RedlockLockLike = {
            value: 'v',
            extend: async () => {
              await sleep(600);
              return held;
            },
            release: async () => undefined,
          };
          return held;
        }),
      { ttlMs: 1000 },
    );
    const readings = await lock.run('n', async (lease) => {
      const seen: number[] = [];
      const started = Date.now();
      while (Date.now() - started < 1800) {
        seen.push(lease.remainingMs());
        await sleep(10);
      }
      return seen;
    });
    const firstZero = readings.indexOf(0);
    expect(firstZero).toBeGreaterThan(0);
    expect(readings.slice(firstZero).every((ms) => ms === 0)).toBe(true);
  });
});
