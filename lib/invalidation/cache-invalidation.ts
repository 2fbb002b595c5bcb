import { randomBytes } from 'node:crypto';
import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { AT_PROTO_APP_SESSION_STORE, AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { AT_PROTO_LOCK_CONNECTION } from '../at-proto.internal-constants.js';
import { AT_PROTO_API_KEY_STORE } from '../api-keys/api-key.constants.js';
import type { AtProtoApiKeyStore } from '../api-keys/api-key.store.js';
import { describeError } from '../errors/describe-error.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import type { RedisClientLike } from '../redis/redis-lock.factory.js';
import { closeRedisClient, type ClosableRedis } from '../redis/redis-shutdown.js';
import type { AppSessionStore } from '../storage/store.interface.js';
import {
  decodeInvalidation,
  encodeInvalidation,
  type InvalidationEvent,
  type InvalidationMessage,
} from './invalidation-message.js';
import { createSubscriberConnection, type SubscriberLike } from './invalidation-subscriber.js';
import type { CacheTrust } from './revocable-cache.js';

/** Each instance publishes a heartbeat this often and must receive its own. @internal */
export const HEARTBEAT_INTERVAL_MS = 250;
/** The channel counts as alive this long after the send time of the last own heartbeat received. @internal */
export const CHANNEL_PROOF_MS = 500;
/**
 * No own heartbeat for this long while Redis acknowledges our publishes: the subscriber
 * connection is dead without knowing it (half-open), so it is reconnected.
 * @internal
 */
export const RESUBSCRIBE_AFTER_MS = 1500;
/** The revocation cursor polls the database this often. @internal */
export const CURSOR_INTERVAL_MS = 1000;
/** The cursor counts as alive this long after the start of its last successful poll. @internal */
export const CURSOR_PROOF_MS = 2000;
/**
 * Most rows one poll reads per table. More revoked within the overlap than this: every
 * cache is cleared rather than reading on (rare; bounded work per second either way).
 * @internal
 */
export const CURSOR_LIMIT = 2000;
/**
 * How far back each poll looks before the start of the previous successful one. A row's
 * `revoked_at` is its writer's clock when the write began, and the write may commit up to
 * `storeRetry.maxElapsedMs` later (5 s by default), so the overlap covers that, the poll
 * interval and a few seconds of clock difference between instances.
 * @internal
 */
export function cursorOverlapMs(options: Pick<ResolvedAtProtoOptions, 'storeRetry'>): number {
  return Math.max(30_000, (options.storeRetry?.maxElapsedMs ?? 5000) + 20_000);
}

/**
 * What a cache does with what the channel and the cursor report.
 * @internal
 */
export interface InvalidationListener {
  /** A revocation made elsewhere (or seen by the cursor), known here at `now`. */
  invalidated(event: InvalidationEvent, now: number): void;
  /** Revocations may have been missed: drop every entry (reads under way included). */
  dropAll(now: number): void;
}

/** A Redis connection that can publish (the lock connection, an ioredis client). */
interface Publisher {
  readonly status: string;
  publish(channel: string, message: string): Promise<unknown>;
}

/** The state, for tests and health checks. @internal */
export interface InvalidationState {
  /** `off` without `redis`; `proven` while own heartbeats come back. */
  readonly channel: 'off' | 'down' | 'subscribed' | 'proven';
  /** `off` when a store cannot list recent revocations. */
  readonly cursor: 'off' | 'down' | 'ok';
  /** Whether entries cached now get `appSession.invalidatedCacheTtl`. */
  readonly trusted: boolean;
}

/**
 * Tells the caches of this instance about revocations made on the others, so that they may
 * keep entries for `appSession.invalidatedCacheTtl` instead of `appSession.cacheTtl`.
 *
 * Two paths, because pub/sub delivers at most once and says nothing when it loses a
 * message:
 * - **The Redis channel** `<redisKeyPrefix>invalidate` (with `redis`): a revocation is
 *   published after its write commits, and applied on every instance within milliseconds.
 *   The subscriber has a connection of its own (it sends no commands, so a command timeout
 *   would never notice it died), and the channel is proven alive by a heartbeat every
 *   250 ms that each instance must receive back. A connection that closes, or no own
 *   heartbeat for 500 ms, is a gap: every cache is cleared at once, and only reads that
 *   start after a new subscription has been proven get the long lifetime again.
 * - **A database cursor** over `revoked_at` (app sessions and API keys), polled every
 *   second on the primary, catches what the channel lost. It is the backstop chosen for a
 *   publisher cut off from Redis, rather than tracking every instance's heartbeats, because
 *   it has no hole: a revocation is a database write, and every instance reads the database,
 *   whoever wrote it and whatever that instance's link to Redis. Heartbeat tracking cannot
 *   see an instance it never heard from (one that started while cut off) and must forget a
 *   silent one at some point (instances also stop for good), after which that instance's
 *   revocations go unheard for the whole long lifetime. The cursor also works without Redis
 *   and catches rows revoked by other means (SQL, another tool).
 *
 * The long lifetime is granted only while both paths are proven: the cursor polled
 * successfully within the last 2 s and, with `redis`, the channel within the last 500 ms.
 * The bound on a revocation reaching this instance is then milliseconds through the
 * channel, and about 2 s after the write commits through the cursor; whenever a path is
 * not proven, every entry is dropped and `appSession.cacheTtl` applies.
 * @internal
 */
@Injectable()
export class AtProtoCacheInvalidation implements CacheTrust, OnModuleInit, OnApplicationShutdown {
  readonly #logger = new Logger('AtProtoInvalidation');
  readonly #listeners = new Set<InvalidationListener>();
  /** Names this instance's heartbeats; random, so that it says nothing about the host. */
  readonly #instance = randomBytes(12).toString('base64url');
  readonly #channelName: string;
  readonly #useChannel: boolean;
  readonly #useCursor: boolean;
  readonly #overlapMs: number;
  readonly #timers: NodeJS.Timeout[] = [];
  #subscriber: SubscriberLike | undefined;
  #closed = false;

  // Channel: when the current subscription was confirmed (undefined while not subscribed),
  // the send time of the last own heartbeat received on it, and the last acknowledged publish.
  #subscribedAt: number | undefined;
  #proofAt = Number.NEGATIVE_INFINITY;
  #lastAckAt = Number.NEGATIVE_INFINITY;
  #lastForcedReconnectAt = Number.NEGATIVE_INFINITY;
  #heartbeatsInFlight = 0;

  // Cursor: the start of the last successful poll, and where the next poll reads from.
  #cursorOkAt = Number.NEGATIVE_INFINITY;
  #cursorSince: number;
  #polling = false;
  /** Rows already applied, by kind and id, with their `revokedAt` (forgotten past the overlap). */
  readonly #applied = new Map<string, number>();

  /** Until when entries may be served for the long lifetime (both proofs fresh). */
  #trustedUntil = Number.NEGATIVE_INFINITY;
  /** Whether a long lifetime was granted since the caches were last cleared. */
  #longGranted = false;
  #lastProblem = '';

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    @Inject(AT_PROTO_LOCK_CONNECTION) private readonly publisher: RedisClientLike | null,
    @Inject(AT_PROTO_APP_SESSION_STORE) private readonly sessions: AppSessionStore,
    @Inject(AT_PROTO_API_KEY_STORE) private readonly keys: AtProtoApiKeyStore,
  ) {
    this.#channelName = `${options.redisKeyPrefix}invalidate`;
    const caching = options.appSession.cacheTtlMs > 0;
    this.#useChannel =
      caching &&
      options.redis !== undefined &&
      publisher !== null &&
      typeof (publisher as unknown as Partial<Publisher>).publish === 'function';
    this.#useCursor =
      caching &&
      typeof sessions.revokedSince === 'function' &&
      typeof keys.revokedSince === 'function';
    this.#overlapMs = cursorOverlapMs(options);
    this.#cursorSince = Date.now() - this.#overlapMs;
  }

  /** Registers a cache. */
  listen(listener: InvalidationListener): void {
    this.#listeners.add(listener);
  }

  async onModuleInit(): Promise<void> {
    if (this.#useCursor) {
      this.#every(CURSOR_INTERVAL_MS, () => void this.#poll());
      void this.#poll();
    }
    if (this.#useChannel && this.options.redis) {
      const subscriber = await createSubscriberConnection(this.options.redis);
      if (this.#closed) {
        subscriber.disconnect();
        return;
      }
      this.#subscriber = subscriber;
      subscriber.on('ready', () => this.#subscribe(subscriber));
      for (const event of ['close', 'end', 'reconnecting'] as const) {
        subscriber.on(event, () => this.#unsubscribed(subscriber));
      }
      subscriber.on('message', (channel: string, text: string) => {
        if (channel === this.#channelName) this.#received(text);
      });
      subscriber.on('error', (error: unknown) =>
        this.#problem(`Invalidation subscriber: ${describeError(error)}`),
      );
      if (subscriber.status === 'ready') this.#subscribe(subscriber);
      this.#every(HEARTBEAT_INTERVAL_MS, () => this.#heartbeat());
    }
  }

  async onApplicationShutdown(): Promise<void> {
    this.#closed = true;
    for (const timer of this.#timers) clearInterval(timer);
    const subscriber = this.#subscriber;
    this.#subscriber = undefined;
    // Bounded: this connection has no command timeout, so a stalled Redis would leave QUIT
    // unanswered for ever. It is the ioredis client createSubscriberConnection made
    // (SubscriberLike names only what the channel uses).
    if (subscriber) await closeRedisClient(subscriber as unknown as ClosableRedis);
  }

  /**
   * Tells the other instances that `event` happened here (after its write committed).
   * Never throws and never waits: a message lost here is caught by their cursors.
   */
  publish(event: InvalidationEvent): void {
    if (!this.#useChannel || this.#closed) return;
    const publisher = this.publisher as unknown as Publisher;
    if (publisher.status !== 'ready') return;
    publisher.publish(this.#channelName, encodeInvalidation(event)).then(
      () => (this.#lastAckAt = Date.now()),
      (error: unknown) =>
        this.#problem(`Could not publish a revocation on the channel: ${describeError(error)}`),
    );
  }

  grantLong(startedAt: number, now: number): boolean {
    if (now > this.#trustedUntil) return false;
    // A read that started before the current subscription may have missed a message sent
    // while the channel was down.
    if (this.#useChannel && (this.#subscribedAt === undefined || startedAt < this.#subscribedAt)) {
      return false;
    }
    this.#longGranted = true;
    return true;
  }

  stillTrusted(now: number): boolean {
    if (now <= this.#trustedUntil) return true;
    this.#lapse(now);
    return false;
  }

  /** Where the channel and the cursor stand. */
  state(now = Date.now()): InvalidationState {
    const channel = !this.#useChannel
      ? 'off'
      : this.#subscribedAt === undefined
        ? 'down'
        : this.#proofAt >= this.#subscribedAt && now - this.#proofAt <= CHANNEL_PROOF_MS
          ? 'proven'
          : 'subscribed';
    const cursor = !this.#useCursor
      ? 'off'
      : now - this.#cursorOkAt <= CURSOR_PROOF_MS
        ? 'ok'
        : 'down';
    return { channel, cursor, trusted: now <= this.#trustedUntil };
  }

  // --- trust ---------------------------------------------------------------------------

  #recompute(): void {
    if (!this.#useCursor) {
      // Without the cursor, a message lost on the channel would go unnoticed for the whole
      // long lifetime: cacheTtl is the bound then.
      this.#trustedUntil = Number.NEGATIVE_INFINITY;
      return;
    }
    let until = this.#cursorOkAt + CURSOR_PROOF_MS;
    if (this.#useChannel) {
      const proven = this.#subscribedAt !== undefined && this.#proofAt >= this.#subscribedAt;
      until = Math.min(until, proven ? this.#proofAt + CHANNEL_PROOF_MS : -Infinity);
    }
    this.#trustedUntil = until;
  }

  /** A path is no longer proven: entries kept for the long lifetime must go, now. */
  #lapse(now: number): void {
    if (!this.#longGranted) return;
    this.#longGranted = false;
    this.#logger.warn(
      'Revocations made on other instances may not reach this one (invalidation channel or ' +
        'revocation cursor not proven): cached sessions and API keys dropped; ' +
        'appSession.cacheTtl applies until both are proven again.',
    );
    this.#dropAll(now);
  }

  #dropAll(now: number): void {
    for (const listener of this.#listeners) listener.dropAll(now);
  }

  #emit(event: InvalidationEvent, now: number): void {
    for (const listener of this.#listeners) listener.invalidated(event, now);
  }

  // --- channel -------------------------------------------------------------------------

  #subscribe(subscriber: SubscriberLike): void {
    subscriber.subscribe(this.#channelName).then(
      () => {
        if (this.#subscriber !== subscriber || subscriber.status !== 'ready') return;
        // Every message Redis handles from now on reaches this connection while it lives.
        this.#subscribedAt = Date.now();
        this.#recompute();
        this.#heartbeat();
      },
      (error: unknown) =>
        this.#problem(`Could not subscribe to the invalidation channel: ${describeError(error)}`),
    );
  }

  #unsubscribed(subscriber: SubscriberLike): void {
    if (this.#subscriber !== subscriber || this.#subscribedAt === undefined) return;
    // Messages published from now until a new subscription are lost for this instance.
    this.#subscribedAt = undefined;
    this.#recompute();
    this.#lapse(Date.now());
  }

  #received(text: string): void {
    const message: InvalidationMessage | undefined = decodeInvalidation(text);
    if (!message) return;
    const now = Date.now();
    if (message.kind === 'heartbeat') {
      if (message.from !== this.#instance) return;
      if (this.#subscribedAt === undefined || message.sentAt < this.#subscribedAt) return;
      if (message.sentAt > this.#proofAt) {
        this.#proofAt = message.sentAt;
        this.#recompute();
        this.#resolved();
      }
      return;
    }
    this.#emit(message, now);
  }

  /** Every 250 ms: a heartbeat, the lapse check, and a reconnect of a dead subscriber. */
  #heartbeat(): void {
    if (this.#closed) return;
    const now = Date.now();
    this.stillTrusted(now);
    const publisher = this.publisher as unknown as Publisher;
    // At most a few heartbeats waiting for Redis (each gives up after the lock connection's
    // command timeout): a stalled Redis must not pile them up.
    if (publisher.status === 'ready' && this.#heartbeatsInFlight < 4) {
      this.#heartbeatsInFlight++;
      publisher
        .publish(
          this.#channelName,
          encodeInvalidation({ kind: 'heartbeat', from: this.#instance, sentAt: now }),
        )
        .then(
          () => (this.#lastAckAt = Date.now()),
          (error: unknown) =>
            this.#problem(`Invalidation heartbeat not published: ${describeError(error)}`),
        )
        .finally(() => this.#heartbeatsInFlight--);
    }
    const subscriber = this.#subscriber;
    const subscribedAt = this.#subscribedAt;
    if (!subscriber || subscribedAt === undefined || subscriber.status !== 'ready') return;
    const lastSign = Math.max(this.#proofAt, subscribedAt);
    if (
      now - lastSign > RESUBSCRIBE_AFTER_MS &&
      now - this.#lastAckAt < RESUBSCRIBE_AFTER_MS &&
      now - this.#lastForcedReconnectAt > 2 * RESUBSCRIBE_AFTER_MS
    ) {
      // Redis takes our heartbeats but none comes back: this connection is dead (half-open)
      // without a socket error to say so. ioredis reconnects it; `close` is a gap.
      this.#lastForcedReconnectAt = now;
      this.#problem('Invalidation subscriber silent while Redis answers: reconnecting it.');
      subscriber.disconnect(true);
    }
  }

  // --- cursor --------------------------------------------------------------------------

  async #poll(): Promise<void> {
    if (this.#polling || this.#closed) return;
    this.#polling = true;
    const startedAt = Date.now();
    try {
      const since = new Date(this.#cursorSince);
      const [sessions, keys] = await Promise.all([
        this.sessions.revokedSince!(since, CURSOR_LIMIT),
        this.keys.revokedSince!(since, CURSOR_LIMIT),
      ]);
      if (this.#closed) return;
      const now = Date.now();
      if (sessions.length >= CURSOR_LIMIT || keys.length >= CURSOR_LIMIT) {
        // More revocations than one poll reads: clearing is cheaper and safe.
        this.#applied.clear();
        this.#dropAll(now);
      } else {
        for (const row of sessions) this.#applyRow('session', row, now);
        for (const row of keys) this.#applyRow('key', row, now);
      }
      this.#cursorSince = startedAt - this.#overlapMs;
      for (const [key, revokedAt] of this.#applied) {
        if (revokedAt <= this.#cursorSince) this.#applied.delete(key);
      }
      this.#cursorOkAt = startedAt;
      this.#recompute();
      this.#resolved();
    } catch (error) {
      this.#problem(`Revocation cursor: ${describeError(error)}`);
    } finally {
      this.#polling = false;
    }
  }

  #applyRow(kind: 'session' | 'key', row: { id: string; revokedAt: Date }, now: number): void {
    const key = `${kind}:${row.id}`;
    if (this.#applied.has(key)) return;
    this.#applied.set(key, row.revokedAt.getTime());
    this.#emit({ kind, id: row.id }, now);
  }

  // --- helpers -------------------------------------------------------------------------

  #every(ms: number, run: () => void): void {
    // unref: these timers must never keep the process alive.
    this.#timers.push(setInterval(run, ms).unref());
  }

  /** Logs a problem once per change (a Redis that is down repeats the same error). */
  #problem(text: string): void {
    if (text !== this.#lastProblem) this.#logger.warn(text);
    this.#lastProblem = text;
  }

  #resolved(): void {
    if (this.#lastProblem !== '' && Date.now() <= this.#trustedUntil) {
      this.#lastProblem = '';
      this.#logger.log('Invalidation channel and revocation cursor proven again.');
    }
  }
}
