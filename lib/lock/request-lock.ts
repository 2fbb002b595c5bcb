import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import { AtProtoLockError } from '../errors/at-proto-lock.error.js';

/** What the holder of a lock can ask about it while its work runs. @publicApi */
export interface AtProtoLockLease {
  /**
   * Milliseconds the lock is still guaranteed to be held by this holder, by this process's
   * clock, measured conservatively (from when the command that set or extended the expiry
   * was *sent*). Infinity for a lock that cannot expire (in-process). 0 once it is lost.
   */
  remainingMs(): number;
}

/**
 * The lock the OAuth client takes around every session restore and refresh, one name per
 * DID. The module provides its own: `LocalRequestLock` in one process, or a Redlock lock with
 * the `redis` option to coordinate several instances. There is no option to provide another
 * implementation yet.
 * @publicApi
 */
export abstract class AtProtoRequestLock {
  /**
   * Runs `fn` while holding the lock `name`; waits for the lock first. `fn` receives the
   * lease of the lock, to check before starting work that must not outlive it.
   */
  abstract run<T>(name: string, fn: (lease: AtProtoLockLease) => T | PromiseLike<T>): Promise<T>;
}

/**
 * Options of {@link LocalRequestLock}.
 * @publicApi
 */
export interface LocalRequestLockOptions {
  /**
   * Longest wait for the lock, from the call of `run()` until `fn` starts. A caller still
   * waiting then gives up with `AtProtoLockError` (a 503 for the request), without running
   * `fn`; the callers queued behind it keep their places. @default 30000
   */
  acquireTimeoutMs?: number;
}

/** The lease of a lock that cannot expire. */
const UNBOUNDED_LEASE: AtProtoLockLease = { remainingMs: () => Infinity };

/** Longest delay `setTimeout` honours; a longer one fires after 1 ms instead. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One caller waiting for its turn: `grant` hands it the lock. */
interface Waiter {
  readonly grant: () => void;
}

/**
 * An in-process lock: serializes work per name within this Node.js process only. Correct
 * for a single app instance (the embedded default); several instances need a distributed
 * lock, or two of them may refresh the same session and log its user out.
 *
 * Waiting is bounded by `acquireTimeoutMs`. Its lease never runs out (`remainingMs()` is
 * `Infinity`): nothing but the holder's own `fn` ends it.
 * @publicApi
 */
export class LocalRequestLock extends AtProtoRequestLock {
  /**
   * One entry per name currently held: the callers waiting for it, in arrival order (a
   * `Set` keeps insertion order and lets a caller that gives up leave from the middle in
   * O(1)). Hand-written rather than a promise chain because a waiter must be able to leave
   * the queue without making those behind it wait for nothing or run too early.
   */
  readonly #queues = new Map<string, Set<Waiter>>();
  readonly #timeout: number;

  constructor(options: LocalRequestLockOptions = {}) {
    super();
    this.#timeout = options.acquireTimeoutMs ?? 30_000;
    assertWaitBound(this.#timeout, 'acquireTimeoutMs', 'LocalRequestLock options');
  }

  async run<T>(name: string, fn: (lease: AtProtoLockLease) => T | PromiseLike<T>): Promise<T> {
    const leave = await this.enter(name, Date.now() + this.#timeout);
    try {
      return await fn(UNBOUNDED_LEASE);
    } finally {
      leave();
    }
  }

  /**
   * Waits for the turn of `name` until `deadline` (epoch milliseconds, by `Date.now()`),
   * then resolves with the function that ends the turn (calling it twice is harmless).
   * Rejects with `AtProtoLockError` once the deadline passes, having left the queue. Used by
   * {@link RedlockRequestLock} so that its in-process wait and its Redis wait share one
   * deadline.
   * @internal
   */
  enter(name: string, deadline: number): Promise<() => void> {
    const waiters = this.#queues.get(name);
    if (!waiters) {
      this.#queues.set(name, new Set());
      return Promise.resolve(this.#leaver(name));
    }
    const waitMs = Math.max(0, deadline - Date.now());
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(timer);
          resolve(this.#leaver(name));
        },
      };
      const timer = setTimeout(
        () => {
          // Leaving the queue is all it takes: the turn passes over this caller, and the
          // holder ahead keeps it until it leaves.
          waiters.delete(waiter);
          reject(lockBusyError(waitMs));
        },
        Math.min(waitMs, MAX_TIMER_MS),
      );
      waiters.add(waiter);
    });
  }

  #leaver(name: string): () => void {
    let left = false;
    return () => {
      if (left) return;
      left = true;
      const waiters = this.#queues.get(name);
      const next = waiters?.values().next();
      if (waiters && next && !next.done) {
        waiters.delete(next.value);
        next.value.grant();
      } else {
        // Nobody waits: forget the name, so that the map does not grow per DID.
        this.#queues.delete(name);
      }
    };
  }
}

/** The error of a wait for the in-process lock that ran out. */
function lockBusyError(waitedMs: number): Error {
  return new AtProtoLockError(
    `The session lock stayed busy for ${Math.round(waitedMs)} ms (another request of this ` +
      'app instance held it). Nothing was changed; try again.',
  );
}

/**
 * Checks a bound given in milliseconds: a positive number a timer can honour.
 * @internal
 */
export function assertWaitBound(value: unknown, name: string, subject: string): void {
  if (typeof value !== 'number' || !(value > 0) || value > MAX_TIMER_MS) {
    throw new AtProtoConfigError(
      [`${name} must be a positive number of milliseconds, at most ${MAX_TIMER_MS}.`],
      subject,
    );
  }
}
