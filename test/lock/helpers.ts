/** Helpers of the session lock's tests. */
import { setTimeout as sleep } from 'node:timers/promises';
import { type RedlockLike, type RedlockSettings } from 'nestjs-atproto-auth';

/** How a promise ended within a time cap, and after how long. */
export type Settled<T> =
  | { state: 'fulfilled'; value: T; ms: number }
  | { state: 'rejected'; error: unknown; ms: number }
  | { state: 'pending'; ms: number };

/**
 * Waits for `promise` at most `capMs`: a promise that hangs shows as `pending` instead of
 * failing the test on Jest's timeout, so the assertion says what went wrong.
 */
export async function settle<T>(promise: Promise<T>, capMs: number): Promise<Settled<T>> {
  const started = Date.now();
  const cap = new AbortController();
  try {
    return await Promise.race([
      promise.then(
        (value): Settled<T> => ({ state: 'fulfilled', value, ms: Date.now() - started }),
        (error: unknown): Settled<T> => ({ state: 'rejected', error, ms: Date.now() - started }),
      ),
      sleep(capMs, undefined, { signal: cap.signal }).then((): Settled<T> => ({
        state: 'pending',
        ms: Date.now() - started,
      })),
    ]);
  } finally {
    cap.abort();
  }
}

/** The shape of redlock's default export this directory's tests use. */
export type RedlockClass = new (clients: unknown[], settings: RedlockSettings) => RedlockLike;

/** redlock's default export, loaded as the module loads it. */
export async function loadRedlock(): Promise<RedlockClass> {
  // @ts-expect-error -- redlock 5's typings do not resolve through its exports (see RedlockLike).
  const { default: Redlock } = (await import('redlock')) as { default: RedlockClass };
  return Redlock;
}
