/** The in-process session lock: one holder per name, a bounded wait, and its lease. */
import { setTimeout as sleep } from 'node:timers/promises';
import { AtProtoLockError, LocalRequestLock } from 'nestjs-atproto-auth';
import { settle } from './helpers.js';

describe('LocalRequestLock', () => {
  it('runs one holder at a time per name, in arrival order, and other names in parallel', async () => {
    const lock = new LocalRequestLock();
    const order: string[] = [];
    let inside = 0;
    let maxInside = 0;
    const work = (label: string) => async () => {
      inside++;
      maxInside = Math.max(maxInside, inside);
      order.push(label);
      await sleep(20);
      inside--;
    };
    let otherRan = false;
    await Promise.all([
      ...['a', 'b', 'c', 'd'].map((label) => lock.run('n', work(label))),
      lock.run('m', () => {
        otherRan = inside > 0; // 'm' does not wait for 'n'
      }),
    ]);
    expect(order).toEqual(['a', 'b', 'c', 'd']);
    expect(maxInside).toBe(1);
    expect(otherRan).toBe(true);
  });

  it('hands its holder a lease that cannot expire', async () => {
    const lock = new LocalRequestLock();
    expect(await lock.run('n', (lease) => lease.remainingMs())).toBe(Infinity);
  });

  it('gives up waiting after acquireTimeoutMs with AtProtoLockError, leaving the holder alone', async () => {
    const lock = new LocalRequestLock({ acquireTimeoutMs: 300 });
    const holder = lock.run('n', () => sleep(1500).then(() => 'held'));
    const waiter = await settle(
      lock.run('n', () => 'never'),
      5000,
    );
    expect(waiter).toMatchObject({ state: 'rejected' });
    const { error } = waiter as { error: unknown };
    expect(error).toBeInstanceOf(AtProtoLockError);
    expect(error).toMatchObject({ code: 'ERR_AT_PROTO_LOCK' });
    expect(waiter.ms).toBeLessThan(300 + 1000);
    expect(await holder).toBe('held');
  });

  /** Work that records its start and end, and whether it ever overlapped another. */
  function recorder() {
    const events: string[] = [];
    let inside = 0;
    let overlap = false;
    const work = (label: string, ms: number) => async () => {
      if (inside++ > 0) overlap = true;
      events.push(`${label}:start`);
      await sleep(ms);
      events.push(`${label}:end`);
      inside--;
      return label;
    };
    const rejected = (label: string) => (error: unknown) => {
      events.push(`${label}:rejected`);
      return error;
    };
    return { events, work, rejected, overlapped: () => overlap };
  }

  // Timers fire in the order they are due, whatever the machine's load, so the orders
  // below do not depend on timing: only on which deadline comes first.
  it('keeps the turn of the waiters behind one that gives up', async () => {
    // Holder until 1200 ms; the first waiter gives up at 800 ms; the second, queued at
    // 600 ms behind it, would give up at 1400 ms and gets its turn at 1200 ms.
    const lock = new LocalRequestLock({ acquireTimeoutMs: 800 });
    const { events, work, rejected, overlapped } = recorder();
    const holder = lock.run('n', work('holder', 1200));
    const gaveUp = lock.run('n', work('gave-up', 10)).catch(rejected('gave-up'));
    await sleep(600);
    const next = lock.run('n', work('next', 10));
    expect(await gaveUp).toBeInstanceOf(AtProtoLockError);
    expect(await Promise.all([holder, next])).toEqual(['holder', 'next']);
    expect(overlapped()).toBe(false);
    expect(events).toEqual([
      'holder:start',
      'gave-up:rejected',
      'holder:end',
      'next:start',
      'next:end',
    ]);
  });

  it('keeps the holder ahead alone when its only waiter gives up', async () => {
    // Holder until 1200 ms; its only waiter gives up at 800 ms, leaving nobody queued; a
    // caller arriving at 900 ms must still wait for the holder.
    const lock = new LocalRequestLock({ acquireTimeoutMs: 800 });
    const { events, work, rejected, overlapped } = recorder();
    const holder = lock.run('n', work('holder', 1200));
    const gaveUp = lock.run('n', work('gave-up', 10)).catch(rejected('gave-up'));
    await sleep(900);
    const late = lock.run('n', work('late', 10));
    expect(await gaveUp).toBeInstanceOf(AtProtoLockError);
    expect(await Promise.all([holder, late])).toEqual(['holder', 'late']);
    expect(overlapped()).toBe(false);
    expect(events).toEqual([
      'holder:start',
      'gave-up:rejected',
      'holder:end',
      'late:start',
      'late:end',
    ]);
    // Nothing is left queued: a new caller runs at once.
    expect(
      await settle(
        lock.run('n', () => 'free'),
        1000,
      ),
    ).toMatchObject({
      state: 'fulfilled',
      value: 'free',
    });
  });

  it('releases the name when the work throws', async () => {
    const lock = new LocalRequestLock({ acquireTimeoutMs: 1000 });
    await expect(
      lock.run('n', () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await lock.run('n', () => 'after')).toBe('after');
  });
});
