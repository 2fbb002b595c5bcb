// OAuth state and session stores on Redis.
//
// Why not build on @atproto-labs/simple-store-redis (0.1.6, evaluated first)? It has the
// hooks we need (encode/decode receive the key, so they could encrypt; one PX TTL per
// store; a key prefix), but:
// - its constructor takes ioredis' nominal `Redis` class type, so a structural client (what
//   keeps ioredis optional and lets apps pass a Cluster or a wrapper) needs an unchecked cast;
// - its decoder must return a value: it cannot say "expired by our clock" (the `now` that
//   the conformance suite's fake clock drives) without lying to the type system;
// - importing it statically from a file reachable from lib/index.ts would turn this 0.x
//   package into a hard runtime dependency, for about thirty lines of GET/SET PX/DEL.
// Everything it does is reproduced below; retries, validation and encryption are ours anyway.
import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node';
import type { KeyRing } from '../../crypto/key-ring.js';
import { getInstalledKeyRing } from '../../crypto/key-ring.registry.js';
import { AtProtoKeyRingUnavailableError } from '../../errors/at-proto-key-ring-unavailable.error.js';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import type {
  AtProtoKeyValueStore,
  AtProtoSessionStore,
  AtProtoStateStore,
  AtProtoStoreOptions,
} from '../store.interface.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { assertSessionBelongsTo, assertValidDid, assertValidStateKey } from '../validation.js';
import { assertValidKeyPrefix, type RedisCommandClient } from './redis-client.js';

/**
 * Options of {@link RedisStateStore} and {@link RedisSessionStore}.
 * @publicApi
 */
export interface RedisStoreOptions extends AtProtoStoreOptions {
  /**
   * Prepended to every key: states live under `<keyPrefix>state:<state>`, sessions under
   * `<keyPrefix>session:<did>`. Use one prefix per app sharing a Redis. Changing it loses
   * the stored values (they are bound to their key, see `keyRing`). @default 'atproto:'
   */
  keyPrefix?: string;
  /**
   * The key ring that encrypts values; by default the one installed by `AtProtoModule`
   * (`installKeyRing`), looked up on every call. Each value is an envelope (see
   * docs/encryption.md) whose associated-data context is `redis:` followed by its full
   * Redis key, e.g. `redis:atproto:session:did:plc:abc`: a value copied or renamed to
   * another key fails to decrypt. Retired keys must stay in the ring until the values
   * written with them have expired (sessions: `ttlMs` after their last write).
   */
  keyRing?: KeyRing;
  /** Retries of transient Redis failures (connection lost, offline, failover). */
  retry?: TransientRetryOptions;
}

/** What is encrypted: the value and the end of its life by the store's clock. */
interface Payload<V> {
  /** Expiry, epoch milliseconds (by `now`). */
  e: number;
  /** The value. */
  v: V;
}

const DEFAULT_PREFIX = 'atproto:';

/**
 * Redis key-value store: one key per value with `PX` = the TTL, the value and its expiry
 * JSON-encoded and encrypted together. Every command is retried on transient failures.
 * @internal
 */
class RedisKeyValueStore<V> implements AtProtoKeyValueStore<V> {
  readonly #redis: RedisCommandClient;
  readonly #options: RedisStoreOptions;
  readonly #now: () => number;
  readonly #prefix: string;

  constructor(
    redis: RedisCommandClient,
    options: RedisStoreOptions,
    private readonly kind: 'state' | 'session',
    private readonly validate: (key: string, value?: V) => void,
  ) {
    const what = `Redis ${kind} store`;
    if (!redis || typeof redis.get !== 'function' || typeof redis.set !== 'function') {
      throw new TypeError(`${what}: pass a connected ioredis client (or a compatible one).`);
    }
    if (!(Number.isFinite(options?.ttlMs) && options.ttlMs >= 1)) {
      throw new TypeError(`${what}: ttlMs must be a positive number of milliseconds.`);
    }
    const prefix = options.keyPrefix ?? DEFAULT_PREFIX;
    assertValidKeyPrefix(prefix, what);
    this.#redis = redis;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#prefix = `${prefix}${kind}:`;
  }

  async get(key: string): Promise<V | undefined> {
    this.validate(key);
    const redisKey = this.#prefix + key;
    const stored = await withTransientRetry(
      `Reading an OAuth ${this.kind} from Redis`,
      () => this.#redis.get(redisKey),
      this.#options.retry,
    );
    if (stored === null || stored === undefined) return undefined;
    const payload = this.#open(redisKey, stored);
    if (payload.e <= this.#now()) return undefined;
    this.validate(key, payload.v);
    return payload.v;
  }

  async set(key: string, value: V): Promise<void> {
    this.validate(key, value);
    const redisKey = this.#prefix + key;
    const ttlMs = Math.ceil(this.#options.ttlMs);
    const payload: Payload<V> = { e: this.#now() + ttlMs, v: value };
    const envelope = this.#ring(redisKey).encrypt(JSON.stringify(payload), context(redisKey));
    await withTransientRetry(
      `Saving an OAuth ${this.kind} to Redis`,
      () => this.#redis.set(redisKey, envelope, 'PX', ttlMs),
      this.#options.retry,
    );
  }

  async del(key: string): Promise<void> {
    this.validate(key);
    const redisKey = this.#prefix + key;
    await withTransientRetry(
      `Deleting an OAuth ${this.kind} from Redis`,
      () => this.#redis.del(redisKey),
      this.#options.retry,
    );
  }

  #ring(redisKey: string): KeyRing {
    const ring = this.#options.keyRing ?? getInstalledKeyRing();
    if (!ring) throw new AtProtoKeyRingUnavailableError(context(redisKey));
    return ring;
  }

  #open(redisKey: string, stored: string): Payload<V> {
    // AtProtoDecryptionError (naming the context, never the value) escapes as the TypeORM
    // stores let it: a value that does not decrypt is an incident, not a missing session.
    const json = this.#ring(redisKey).decrypt(stored, context(redisKey));
    const payload = JSON.parse(json) as Partial<Payload<V>> | null;
    if (!payload || typeof payload.e !== 'number' || payload.v === undefined) {
      throw new AtProtoStoreError(
        `An OAuth ${this.kind} stored in Redis decrypted to an unexpected shape: refusing to use it.`,
      );
    }
    return payload as Payload<V>;
  }
}

/** The associated-data context of the value under `redisKey`. */
function context(redisKey: string): string {
  return `redis:${redisKey}`;
}

/**
 * OAuth state store on Redis: `<keyPrefix>state:<state>` holds the encrypted saved state
 * (PKCE verifier, DPoP key) and expires `ttlMs` after its write (Redis `PX`, and the
 * store's own clock on read).
 *
 * @example
 * new RedisStateStore(redis, { ttlMs: 30 * 60_000, keyPrefix: 'myapp:atproto:' })
 * @publicApi
 */
export class RedisStateStore
  extends RedisKeyValueStore<NodeSavedState>
  implements AtProtoStateStore
{
  /** @param redis a connected ioredis client; the store never creates nor closes connections. */
  constructor(redis: RedisCommandClient, options: RedisStoreOptions) {
    super(redis, options, 'state', (key) => assertValidStateKey(key));
  }
}

/**
 * OAuth session store on Redis: `<keyPrefix>session:<did>` holds the encrypted session
 * (token set, DPoP key) and expires `ttlMs` (the OAuth-session retention) after its last
 * write. DIDs are validated and a session whose token set belongs to another DID is
 * refused, on write and on read. Writes are retried on transient failures, because the
 * OAuth client revokes a session it cannot persist.
 *
 * @example
 * new RedisSessionStore(redis, { ttlMs: 90 * 24 * 3_600_000, keyPrefix: 'myapp:atproto:' })
 * @publicApi
 */
export class RedisSessionStore
  extends RedisKeyValueStore<NodeSavedSession>
  implements AtProtoSessionStore
{
  /** @param redis a connected ioredis client; the store never creates nor closes connections. */
  constructor(redis: RedisCommandClient, options: RedisStoreOptions) {
    super(redis, options, 'session', (did, value) => {
      assertValidDid(did);
      if (value !== undefined) assertSessionBelongsTo(did, value.tokenSet?.sub);
    });
  }
}
