import { setTimeout as sleep } from 'node:timers/promises';
import { Logger } from '@nestjs/common';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import { AtProtoLockError } from '../errors/at-proto-lock.error.js';
import { describeError } from '../errors/describe-error.js';
import { noRefreshScope } from './lock-scope.js';
import {
  assertWaitBound,
  AtProtoRequestLock,
  LocalRequestLock,
  type AtProtoLockLease,
} from './request-lock.js';

export { AtProtoLockError };

/**
 * The part of a `redlock` (v5) lock this module uses. Declared here because redlock 5's
 * published typings cannot be resolved through its `exports` under NodeNext, and clash with
 * newer ioredis typings: the module talks to it through this narrow shape only.
 * @publicApi
 */
export interface RedlockLike {
  acquire(resources: string[], durationMs: number): Promise<RedlockLockLike>;
  on(event: 'error', listener: (error: unknown) => void): unknown;
}

/** A held redlock lock. @publicApi */
export interface RedlockLockLike {
  extend(durationMs: number): Promise<RedlockLockLike>;
  release(): Promise<unknown>;
  /**
   * The random value the lock stored under its key (redlock's `Lock` has it). With it and
   * the `redis` option, a failed extension is recovered by re-asserting this value in Redis;
   * without, it is only retried through `extend`.
   */
  readonly value?: string;
}

/**
 * The one command the lock sends to Redis itself rather than through redlock: `EVAL`, to
 * re-assert a lock after a failed extension. An ioredis client satisfies it.
 * @publicApi
 */
export interface RedisEvalClient {
  eval(script: string, numKeys: number, ...keysAndArgs: (string | number)[]): Promise<unknown>;
}

/** Settings the module passes to redlock's constructor. @internal */
export interface RedlockSettings {
  retryCount: number;
  retryDelay: number;
  retryJitter: number;
  automaticExtensionThreshold: number;
}

/**
 * How long one Redis command of the lock may take before it counts as failed (1.5 s): far
 * above a healthy Redis' latency, and small enough that an extension and its recovery fit
 * in half the default TTL. The module sets it as the lock connection's `commandTimeout`.
 * @internal
 */
export const DEFAULT_LOCK_COMMAND_TIMEOUT_MS = 1500;

/**
 * Options of {@link RedlockRequestLock}.
 * @publicApi
 */
export interface RedlockRequestLockOptions {
  /** Prefix of the lock keys in Redis. @default 'atproto:lock:' */
  keyPrefix?: string;
  /**
   * Lock lifetime in Redis, renewed every half of it while the work runs. A holder that
   * dies keeps the lock this long at most; keep it at or below `acquireTimeoutMs`, so that
   * waiters outlast a dead holder's lock. @default 10000
   */
  ttlMs?: number;
  /**
   * Longest wait for the lock, from the call of `run()` until its `fn` starts: the wait
   * behind other callers of this process and the wait for Redis share this one deadline,
   * and a Redis that does not answer cannot stretch it. Then `run()` rejects with
   * {@link AtProtoLockError}. @default 30000
   */
  acquireTimeoutMs?: number;
  /** Pause between attempts while another instance holds the lock. @default 50 */
  retryDelayMs?: number;
  /**
   * Longest wait for Redis' answer to one extension, re-assertion or release of the lock;
   * past it, the command counts as failed (an extension is then recovered, a release left
   * to the TTL). Set the Redis connection's own command timeout to the same value, so that
   * late answers do not pile up. @default 1500
   */
  commandTimeoutMs?: number;
  /**
   * The Redis connection redlock uses. With it, a failed extension is retried at once as a
   * compare-and-`PEXPIRE` on the lock's own value (see {@link RedlockRequestLock}); without
   * it, only through redlock's `extend`, which refuses a lock whose local expiry has passed.
   */
  redis?: RedisEvalClient;
  /**
   * Whether the Redis connection is up. When it says no, waiting is pointless: the lock
   * fails at once (a 503 for the request) instead of retrying until the timeout.
   */
  isAvailable?: () => boolean;
}

/**
 * Extends the key's expiry only if it still holds this holder's value: the holder
 * re-asserts a lock it still owns, and never takes back one that expired and was taken by
 * someone else. redlock's own extension script is the same compare-and-set, but redlock
 * refuses to run it for a `Lock` object whose local expiry has passed or that a timed-out
 * extension invalidated, which is exactly when it is needed.
 */
const REASSERT_SCRIPT = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;

/** The lease of a call that holds nothing (the no-refresh scope). */
const NOTHING_HELD: AtProtoLockLease = Object.freeze({ remainingMs: () => 0 });

/** What one attempt to renew a held lock came to. */
type Renewal =
  | { kind: 'renewed'; sentAt: number; recovered: boolean }
  | { kind: 'failed'; error: unknown }
  | { kind: 'lost'; reason: string };

/**
 * One holding of the Redis lock: the redlock `Lock` (for extending and releasing) and how
 * long the lock is guaranteed to be held, by this process's clock.
 */
class Hold {
  readonly lease: AtProtoLockLease = Object.freeze({ remainingMs: () => this.remainingMs() });
  /** False once redlock's `Lock` object can no longer be extended (a failed extension). */
  redlockUsable = true;
  /**
   * True once Redis answered that the key no longer holds this holder's value: it never
   * will again (only this holder writes that value), so there is nothing to release.
   */
  gone = false;
  #heldUntil: number;
  #lost = false;

  constructor(
    public lock: RedlockLockLike,
    heldUntil: number,
  ) {
    this.#heldUntil = heldUntil;
  }

  /**
   * Once it has reached 0 it stays there: a lease that ran out tells its holder nothing
   * more about the key, and work checked against it must not start again.
   */
  remainingMs(): number {
    if (this.#lost) return 0;
    const remaining = this.#heldUntil - Date.now();
    if (remaining > 0) return remaining;
    this.#lost = true;
    return 0;
  }

  /** Records a renewed expiry; false if the lease had run out before (it stays lost). */
  renew(heldUntil: number): boolean {
    if (this.remainingMs() === 0) return false;
    this.#heldUntil = Math.max(this.#heldUntil, heldUntil);
    return true;
  }

  lose(): void {
    this.#lost = true;
  }
}

/**
 * The session lock for several app instances: Redlock over one Redis connection that
 * fails fast (no offline queue). One lock per DID; within one process, callers queue on an
 * in-process lock first, so that an instance holds at most one Redis lock per DID at a time.
 *
 * Bounds:
 * - `acquireTimeoutMs` (30 s): one deadline per `run()` for the in-process queue and the
 *   Redis acquisition together; each acquisition attempt is raced against what remains of
 *   it. An attempt that succeeds after the caller gave up is released at once.
 * - `ttlMs` (10 s): the lock's lifetime in Redis, renewed every `ttlMs / 2` while `fn` runs
 *   (the OAuth client does not abort a refresh in flight).
 * - `commandTimeoutMs` (1.5 s): each extension, re-assertion and release is raced against
 *   it. The release runs in the background: `run()` settles as soon as `fn` does; a lock
 *   whose release fails expires after `ttlMs`.
 *
 * A failed extension (a timeout, a lost connection, redlock refusing a `Lock` object past
 * its local expiry) is retried at once as a compare-and-`PEXPIRE` on the lock's own value
 * (needs the `redis` option): the lock is kept if Redis still holds this holder's value,
 * and declared lost if not (expired, or taken by another holder; it is never taken back).
 * While Redis fails to answer, the re-assertion is retried every `max(retryDelayMs,
 * ttlMs / 20)` until the lease runs out. The lease handed to `fn` says how long the lock is
 * still guaranteed (see {@link AtProtoLockLease}); the work itself goes on either way.
 *
 * Calls marked by the module as unable to refresh (a fresh stored token, `restore(did,
 * false)`) skip Redis entirely, and get a lease of 0 (nothing is held); see `lock-scope.ts`
 * for why that is safe.
 * @publicApi
 */
export class RedlockRequestLock extends AtProtoRequestLock {
  readonly #logger = new Logger('AtProtoLock');
  readonly #local: LocalRequestLock;
  readonly #redlock: RedlockLike;
  readonly #redis: RedisEvalClient | undefined;
  readonly #prefix: string;
  readonly #ttl: number;
  /** What redlock subtracts from a lock's validity for clock drift (1% + 2 ms). */
  readonly #drift: number;
  readonly #timeout: number;
  readonly #retryDelay: number;
  readonly #commandTimeout: number;
  readonly #isAvailable: () => boolean;

  /**
   * @param createRedlock builds the redlock instance from the settings this lock needs,
   * e.g. `(settings) => new Redlock([redis], settings)` with `redlock@5` and an `ioredis`
   * client that fails fast (`enableOfflineQueue: false`) and has a `commandTimeout`; pass
   * the same client as the `redis` option.
   */
  constructor(
    createRedlock: (settings: RedlockSettings) => RedlockLike,
    options: RedlockRequestLockOptions = {},
  ) {
    super();
    const subject = 'RedlockRequestLock options';
    this.#prefix = options.keyPrefix ?? 'atproto:lock:';
    this.#ttl = options.ttlMs ?? 10_000;
    this.#timeout = options.acquireTimeoutMs ?? 30_000;
    this.#retryDelay = options.retryDelayMs ?? 50;
    this.#commandTimeout = options.commandTimeoutMs ?? DEFAULT_LOCK_COMMAND_TIMEOUT_MS;
    // redlock refuses durations that are not whole milliseconds.
    assertWaitBound(this.#ttl, 'ttlMs', subject);
    if (!Number.isInteger(this.#ttl)) {
      throw new AtProtoConfigError(['ttlMs must be a whole number of milliseconds.'], subject);
    }
    assertWaitBound(this.#timeout, 'acquireTimeoutMs', subject);
    assertWaitBound(this.#commandTimeout, 'commandTimeoutMs', subject);
    if (!(this.#retryDelay >= 0 && Number.isFinite(this.#retryDelay))) {
      throw new AtProtoConfigError(['retryDelayMs must be 0 or more milliseconds.'], subject);
    }
    this.#drift = Math.round(0.01 * this.#ttl) + 2;
    this.#redis = options.redis;
    this.#isAvailable = options.isAvailable ?? (() => true);
    this.#local = new LocalRequestLock({ acquireTimeoutMs: this.#timeout });
    this.#redlock = createRedlock({
      // One attempt per acquire(): the waiting loop is ours, so that it can stop at once
      // when Redis goes away instead of voting against an unreachable server until timeout.
      retryCount: 0,
      retryDelay: this.#retryDelay,
      retryJitter: this.#retryDelay,
      // Extension is driven below rather than by redlock's using(), whose release in
      // `finally` would turn a finished refresh into an error when Redis is gone.
      automaticExtensionThreshold: 0,
    });
    // redlock emits "error" for every failed vote; without a listener Node would throw it.
    this.#redlock.on('error', () => undefined);
  }

  async run<T>(name: string, fn: (lease: AtProtoLockLease) => T | PromiseLike<T>): Promise<T> {
    if (noRefreshScope.getStore()?.lockName === name) return fn(NOTHING_HELD);
    const deadline = Date.now() + this.#timeout;
    const leave = await this.#local.enter(name, deadline);
    try {
      return await this.#withRedisLock(name, deadline, fn);
    } finally {
      leave();
    }
  }

  async #withRedisLock<T>(
    name: string,
    deadline: number,
    fn: (lease: AtProtoLockLease) => T | PromiseLike<T>,
  ): Promise<T> {
    const key = `${this.#prefix}${name}`;
    const { lock, sentAt } = await this.#acquire(key, deadline);
    const hold = new Hold(lock, sentAt + this.#ttl - this.#drift);
    const stop = new AbortController();
    void this.#keepAlive(key, hold, sentAt, stop.signal);
    try {
      return await fn(hold.lease);
    } finally {
      // Stop before releasing: no extension is sent after the release (one in flight was
      // sent before it, on the same connection, and cannot revive a deleted key: both
      // extension scripts compare the value first).
      stop.abort();
      if (!hold.gone) this.#releaseInBackground(hold.lock);
    }
  }

  async #acquire(
    key: string,
    deadline: number,
  ): Promise<{ lock: RedlockLockLike; sentAt: number }> {
    let lastError: unknown;
    for (;;) {
      if (!this.#isAvailable()) {
        throw new AtProtoLockError(
          'The session lock is unavailable because Redis cannot be reached. Nothing was changed; try again.',
          lastError === undefined ? undefined : { cause: lastError },
        );
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw this.#busy(lastError);
      const sentAt = Date.now();
      const attempt = callAsync(() => this.#redlock.acquire([key], this.#ttl));
      const deadlinePassed = new AtProtoLockError(
        `Redis did not answer a lock acquisition before the ${this.#timeout} ms deadline.`,
      );
      try {
        return { lock: await within(attempt, remaining, deadlinePassed), sentAt };
      } catch (error) {
        if (error === deadlinePassed) {
          // The attempt may still succeed; nobody would then use or release that lock,
          // and it would keep every instance out for a TTL.
          attempt.then(
            (late) => this.#releaseInBackground(late),
            () => undefined,
          );
          throw this.#busy(error);
        }
        lastError = error;
      }
      const pause = this.#retryDelay * (0.5 + Math.random());
      await sleep(Math.max(0, Math.min(pause, deadline - Date.now())));
    }
  }

  #busy(cause: unknown): AtProtoLockError {
    return new AtProtoLockError(
      `The session lock could not be taken within ${this.#timeout} ms (held elsewhere, or ` +
        'Redis did not answer). Nothing was changed; try again.',
      cause === undefined ? undefined : { cause },
    );
  }

  /**
   * Renews the lock every half TTL (from `acquiredAt`, when the acquisition was sent) until
   * `signal` aborts, recovering failed extensions (see the class comment). Never rejects.
   */
  async #keepAlive(
    key: string,
    hold: Hold,
    acquiredAt: number,
    signal: AbortSignal,
  ): Promise<void> {
    const period = Math.floor(this.#ttl / 2);
    const retryPause = Math.max(this.#retryDelay, Math.floor(this.#ttl / 20));
    let due = acquiredAt + period;
    let failing = false;
    try {
      for (;;) {
        // Not ref'd: a pending renewal alone must not keep the process alive.
        await sleep(Math.max(0, due - Date.now()), undefined, { signal, ref: false });
        if (hold.remainingMs() === 0) {
          this.#logger.warn(
            'Lost a session lock: it could not be renewed before it expired. The work under ' +
              'it goes on; another instance may now take it.',
          );
          return;
        }
        const renewal = await this.#renew(key, hold, signal);
        if (signal.aborted) return;
        if (renewal.kind === 'renewed') {
          if (failing || renewal.recovered) {
            this.#logger.log('Re-asserted a session lock in Redis after a failed extension.');
          }
          failing = false;
          due = renewal.sentAt + period;
        } else if (renewal.kind === 'lost') {
          hold.lose();
          this.#logger.warn(
            `Lost a session lock: ${renewal.reason}. The work under it goes on; another ` +
              'instance may hold the lock now.',
          );
          return;
        } else {
          if (!failing) {
            this.#logger.warn(
              `Could not renew a session lock (${describeError(renewal.error)}); retrying ` +
                `while it is still held (${hold.remainingMs()} ms).`,
            );
          }
          failing = true;
          due = Date.now() + retryPause;
        }
      }
    } catch (error) {
      if (!signal.aborted) {
        // Only a bug can land here (the steps above do not throw); say so, do not crash.
        this.#logger.error(`Session lock renewal stopped: ${describeError(error)}`);
      }
    }
  }

  /** One renewal: redlock's extension while its `Lock` is usable, else a re-assertion. */
  async #renew(key: string, hold: Hold, signal: AbortSignal): Promise<Renewal> {
    let recovered = false;
    if (hold.redlockUsable) {
      const sentAt = Date.now();
      try {
        const extended = await within(
          callAsync(() => hold.lock.extend(this.#ttl)),
          this.#commandTimeout,
          this.#noAnswer('extension'),
          false,
        );
        hold.lock = extended;
        return this.#renewed(hold, sentAt, false);
      } catch (error) {
        if (!this.#redis || hold.lock.value === undefined) return { kind: 'failed', error };
        // Whether redlock applied it or not, its Lock object may now be unusable (redlock
        // invalidates the old one on every extension, and refuses one past its local
        // expiry): the compare-and-PEXPIRE renews the lock from now on.
        this.#logger.warn(
          `Could not extend a session lock (${describeError(error)}); re-asserting it in Redis.`,
        );
        hold.redlockUsable = false;
        recovered = true;
        if (signal.aborted) return { kind: 'failed', error };
      }
    }
    const redis = this.#redis;
    const value = hold.lock.value;
    if (!redis || value === undefined) {
      return {
        kind: 'failed',
        error: new AtProtoLockError('Nothing left to renew the lock with.'),
      };
    }
    const sentAt = Date.now();
    try {
      const result = await within(
        callAsync(() => redis.eval(REASSERT_SCRIPT, 1, key, value, this.#ttl)),
        this.#commandTimeout,
        this.#noAnswer('re-assertion'),
        false,
      );
      if (result === 1) return this.#renewed(hold, sentAt, recovered);
      hold.gone = true;
      return { kind: 'lost', reason: 'Redis no longer holds its value (expired or taken over)' };
    } catch (error) {
      return { kind: 'failed', error };
    }
  }

  #renewed(hold: Hold, sentAt: number, recovered: boolean): Renewal {
    // Measured from when the command was sent: Redis started the new TTL later than that.
    return hold.renew(sentAt + this.#ttl - this.#drift)
      ? { kind: 'renewed', sentAt, recovered }
      : { kind: 'lost', reason: 'it expired before its renewal was confirmed' };
  }

  #noAnswer(what: string): AtProtoLockError {
    return new AtProtoLockError(
      `Redis did not answer a lock ${what} within ${this.#commandTimeout} ms.`,
    );
  }

  /** Releases in the background, bounded by the command timeout: nobody waits for it. */
  #releaseInBackground(lock: RedlockLockLike): void {
    within(
      callAsync(() => lock.release()),
      this.#commandTimeout,
      this.#noAnswer('release'),
      false,
    ).catch((error: unknown) => {
      // The work is done (and stored); the lock expires on its own after the TTL.
      this.#logger.warn(`Could not release a session lock: ${describeError(error)}`);
    });
  }
}

/** `operation()` as a promise, also when it throws before returning one. */
function callAsync<T>(operation: () => PromiseLike<T>): Promise<T> {
  return Promise.resolve().then(operation);
}

/**
 * `promise`, or a rejection with `timedOut` if it has not settled within `ms`. Hand-written
 * (`AbortSignal.timeout` would need every call to take a signal, which neither redlock nor
 * ioredis does): what is raced is not cancelled, only no longer waited for. With `ref`
 * false, the timer alone does not keep the process alive (for background work).
 */
function within<T>(promise: Promise<T>, ms: number, timedOut: Error, ref = true): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expiry = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut), ms);
    if (!ref) timer.unref();
  });
  return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
}
