import { setTimeout as sleep } from 'node:timers/promises';
import { Logger } from '@nestjs/common';
import { AtProtoError } from '../errors/at-proto.error.js';
import { describeError } from '../errors/describe-error.js';
import { noRefreshScope } from './lock-scope.js';
import { AtProtoRequestLock, LocalRequestLock } from './request-lock.js';

/**
 * Thrown when the distributed session lock cannot be taken (Redis down or the lock held
 * for longer than the wait budget). Nothing was refreshed and the session is intact;
 * `@AtProtoSession()` answers 503.
 * @publicApi
 */
export class AtProtoLockError extends AtProtoError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AT_PROTO_LOCK', message, options);
  }
}

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
}

/** Settings the module passes to redlock's constructor. @internal */
export interface RedlockSettings {
  retryCount: number;
  retryDelay: number;
  retryJitter: number;
  automaticExtensionThreshold: number;
}

/**
 * Options of {@link RedlockRequestLock}.
 * @publicApi
 */
export interface RedlockRequestLockOptions {
  /** Prefix of the lock keys in Redis. @default 'atproto:lock:' */
  keyPrefix?: string;
  /** Lock lifetime, renewed every half of it while the work runs. @default 10000 */
  ttlMs?: number;
  /** How long to wait for the lock before giving up. @default 30000 */
  acquireTimeoutMs?: number;
  /** Pause between attempts while another instance holds the lock. @default 50 */
  retryDelayMs?: number;
  /**
   * Whether the Redis connection is up. When it says no, waiting is pointless: the lock
   * fails at once (a 503 for the request) instead of retrying until the timeout.
   */
  isAvailable?: () => boolean;
}

/**
 * The session lock for several app instances: Redlock over one Redis connection that
 * fails fast (no offline queue). One lock per DID, auto-extended while the work runs (the
 * OAuth client does not abort a refresh in flight), released in `finally`; if Redis is gone
 * by then, the lock simply expires after `ttlMs`. Within one process, callers queue on an
 * in-process lock first, so that an instance holds at most one Redis lock per DID at a time.
 *
 * Calls marked by the module as unable to refresh (a fresh stored token, `restore(did,
 * false)`) skip Redis entirely; see `lock-scope.ts` for why that is safe.
 * @publicApi
 */
export class RedlockRequestLock extends AtProtoRequestLock {
  readonly #logger = new Logger('AtProtoLock');
  readonly #local = new LocalRequestLock();
  readonly #redlock: RedlockLike;
  readonly #prefix: string;
  readonly #ttl: number;
  readonly #timeout: number;
  readonly #retryDelay: number;
  readonly #isAvailable: () => boolean;

  /**
   * @param createRedlock builds the redlock instance from the settings this lock needs,
   * e.g. `(settings) => new Redlock([redis], settings)` with `redlock@5` and an `ioredis`
   * client that fails fast (`enableOfflineQueue: false`).
   */
  constructor(
    createRedlock: (settings: RedlockSettings) => RedlockLike,
    options: RedlockRequestLockOptions = {},
  ) {
    super();
    this.#prefix = options.keyPrefix ?? 'atproto:lock:';
    this.#ttl = options.ttlMs ?? 10_000;
    this.#timeout = options.acquireTimeoutMs ?? 30_000;
    this.#retryDelay = options.retryDelayMs ?? 50;
    this.#isAvailable = options.isAvailable ?? (() => true);
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

  async run<T>(name: string, fn: () => T | PromiseLike<T>): Promise<T> {
    if (noRefreshScope.getStore()?.lockName === name) return fn();
    return this.#local.run(name, () => this.#withRedisLock(name, fn));
  }

  async #acquire(key: string): Promise<RedlockLockLike> {
    const deadline = Date.now() + this.#timeout;
    for (;;) {
      if (!this.#isAvailable()) {
        throw new AtProtoLockError(
          'The session lock is unavailable because Redis cannot be reached. Nothing was changed; try again.',
        );
      }
      try {
        return await this.#redlock.acquire([key], this.#ttl);
      } catch (error) {
        if (Date.now() >= deadline) {
          throw new AtProtoLockError(
            `The session lock stayed busy for ${this.#timeout} ms. Nothing was changed; try again.`,
            { cause: error },
          );
        }
        await sleep(this.#retryDelay * (0.5 + Math.random()));
      }
    }
  }

  async #withRedisLock<T>(name: string, fn: () => T | PromiseLike<T>): Promise<T> {
    const key = `${this.#prefix}${name}`;
    let lock = await this.#acquire(key);
    // Renew at half the TTL while the work runs: a refresh in flight is never aborted, so
    // the lock must outlive it. A failed renewal is logged; the work goes on.
    let extending: Promise<unknown> = Promise.resolve();
    const timer = setInterval(
      () => {
        extending = lock
          .extend(this.#ttl)
          .then((extended) => {
            lock = extended;
          })
          .catch((error: unknown) => {
            this.#logger.warn(`Could not extend a session lock: ${describeError(error)}`);
          });
      },
      Math.floor(this.#ttl / 2),
    );
    timer.unref();
    try {
      return await fn();
    } finally {
      clearInterval(timer);
      await extending;
      await lock.release().catch((error: unknown) => {
        // The work is done (and stored); the lock expires on its own after the TTL.
        this.#logger.warn(`Could not release a session lock: ${describeError(error)}`);
      });
    }
  }
}
