// Caches of the OAuth client (DPoP nonces, DID documents, handles, server metadata) shared
// through Redis by every instance of the app, instead of one in-memory cache per process.
import { Logger } from '@nestjs/common';
import type {
  AuthorizationServerMetadataCache,
  DidCache,
  DpopNonceCache,
  HandleCache,
  ProtectedResourceMetadataCache,
} from '@atproto/oauth-client-node';
import type { KeyRing } from '../../crypto/key-ring.js';
import { getInstalledKeyRing } from '../../crypto/key-ring.registry.js';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import { AtProtoKeyRingUnavailableError } from '../../errors/at-proto-key-ring-unavailable.error.js';
import { assertValidKeyPrefix, type RedisCommandClient } from './redis-client.js';

/**
 * The caches `createRedisOAuthCaches` returns, named as `NodeOAuthClient` options.
 * @publicApi
 */
export interface RedisOAuthCaches {
  /** Last DPoP nonce of each server, by origin. */
  dpopNonceCache: DpopNonceCache;
  /** Resolved DID documents, by DID. */
  didCache: DidCache;
  /** Resolved handles (their DID, or `null`), by handle. */
  handleCache: HandleCache;
  /** Authorization server metadata, by issuer. */
  authorizationServerMetadataCache: AuthorizationServerMetadataCache;
  /** Protected resource (PDS) metadata, by origin. */
  protectedResourceMetadataCache: ProtectedResourceMetadataCache;
}

/**
 * Default lifetimes, in milliseconds: those of the OAuth client's own in-memory caches.
 * - `dpopNonceCache`, `authorizationServerMetadataCache`, `protectedResourceMetadataCache`:
 *   60 s (`@atproto/oauth-client` 0.8.7, dist/oauth-client.js: `new SimpleStoreMemory({ ttl: 60e3, max: 100 })`).
 * - `didCache`: 1 hour (`@atproto-labs/did-resolver`, dist/did-cache-memory.js: `DEFAULT_TTL = 3600 * 1000`).
 * - `handleCache`: 10 minutes (`@atproto-labs/handle-resolver`, dist/cached-handle-resolver.js: `ttl: 10 * 60e3`).
 * @publicApi
 */
export const REDIS_OAUTH_CACHE_TTL_MS: Readonly<Record<keyof RedisOAuthCaches, number>> =
  Object.freeze({
    dpopNonceCache: 60_000,
    didCache: 3_600_000,
    handleCache: 600_000,
    authorizationServerMetadataCache: 60_000,
    protectedResourceMetadataCache: 60_000,
  });

/** Namespace of each cache under `<keyPrefix>cache:`. */
const NAMESPACES: Readonly<Record<keyof RedisOAuthCaches, string>> = {
  dpopNonceCache: 'dpop-nonce',
  didCache: 'did',
  handleCache: 'handle',
  authorizationServerMetadataCache: 'as-metadata',
  protectedResourceMetadataCache: 'pr-metadata',
};

/**
 * Options of {@link createRedisOAuthCaches}.
 * @publicApi
 */
export interface RedisOAuthCachesOptions {
  /**
   * Prepended to every key: entries live under `<keyPrefix>cache:<name>:<key>`, `<name>`
   * being `dpop-nonce`, `did`, `handle`, `as-metadata` or `pr-metadata`.
   * @default 'atproto:'
   */
  keyPrefix?: string;
  /** Lifetime of each cache's entries; defaults in {@link REDIS_OAUTH_CACHE_TTL_MS}. */
  ttlMs?: Partial<Record<keyof RedisOAuthCaches, number>>;
  /**
   * Longest wait for one Redis command; past it the cache answers "miss" (or drops the
   * write) so that a slow or unreachable Redis delays a request by at most this. @default 500
   */
  timeoutMs?: number;
  /**
   * The key ring that seals entries. Entries are JSON, encrypted and authenticated
   * (AES-256-GCM, associated-data context `redis:` + the entry's full key): anyone able to
   * write to Redis could otherwise plant a DID document pointing at their own PDS and
   * authorization server. By default the ring installed by `AtProtoModule`; without one,
   * every lookup is a miss.
   */
  keyRing?: KeyRing;
  /**
   * How long the authorization server and protected resource metadata read from Redis is
   * also kept in process, so that restoring a session (which reads the metadata each time)
   * does not pay a Redis round trip on every request: metadata is public, per server, and
   * changes rarely. A copy is at most this much older than Redis's; 0 turns it off. Nonces,
   * DID documents and handles are never kept in process. @default 10000
   */
  localTtlMs?: number;
  /** The clock of the in-process copies (tests). @default Date.now */
  now?: () => number;
  /** Where failures are reported (at debug level). @default a Nest `Logger` 'AtProtoRedisCache' */
  logger?: { debug(message: string): void };
}

/** Longest key cached; longer ones (never legitimate) bypass the cache. */
const MAX_KEY_LENGTH = 2048;

/**
 * A best-effort SimpleStore on Redis: JSON values, sealed with the key ring, with a `PX`
 * TTL. It never throws: a failed or slow `get` is a miss, a failed `set`/`del` is dropped,
 * and both are logged at debug level.
 * @internal
 */
export class RedisJsonCache<K extends string, V> {
  constructor(
    private readonly redis: RedisCommandClient,
    private readonly name: string,
    private readonly prefix: string,
    private readonly ttlMs: number,
    private readonly timeoutMs: number,
    private readonly keyRing: () => KeyRing | undefined,
    private readonly logger: { debug(message: string): void },
  ) {}

  async get(key: K): Promise<V | undefined> {
    if (key.length > MAX_KEY_LENGTH) return undefined;
    const redisKey = this.prefix + key;
    try {
      const stored = await this.#timed(this.redis.get(redisKey));
      if (stored === null || stored === undefined) return undefined;
      return JSON.parse(this.#ring(redisKey).decrypt(stored, `redis:${redisKey}`)) as V;
    } catch (error) {
      this.#failed('get', key, error);
      return undefined;
    }
  }

  async set(key: K, value: V): Promise<void> {
    if (key.length > MAX_KEY_LENGTH || value === undefined) return;
    const redisKey = this.prefix + key;
    try {
      const sealed = this.#ring(redisKey).encrypt(JSON.stringify(value), `redis:${redisKey}`);
      await this.#timed(this.redis.set(redisKey, sealed, 'PX', this.ttlMs));
    } catch (error) {
      this.#failed('set', key, error);
    }
  }

  async del(key: K): Promise<void> {
    if (key.length > MAX_KEY_LENGTH) return;
    try {
      await this.#timed(this.redis.del(this.prefix + key));
    } catch (error) {
      this.#failed('del', key, error);
    }
  }

  #ring(redisKey: string): KeyRing {
    const ring = this.keyRing();
    if (!ring) throw new AtProtoKeyRingUnavailableError(`redis:${redisKey}`);
    return ring;
  }

  #timed<T>(command: Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new AtProtoStoreError(
              `A shared cache got no answer from Redis within ${this.timeoutMs} ms.`,
            ),
          ),
        this.timeoutMs,
      );
    });
    // The command may still settle after the timeout: keep its rejection from going unhandled.
    command.catch(() => undefined);
    return Promise.race([command, timeout]).finally(() => clearTimeout(timer));
  }

  #failed(operation: string, key: string, error: unknown): void {
    try {
      const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      this.logger.debug(
        `${this.name} ${operation}(${JSON.stringify(key.slice(0, 200))}) failed, ignored: ${reason}`,
      );
    } catch {
      // A logger must not turn a cache failure into a request failure.
    }
  }
}

/** Most servers whose metadata is kept in process (issuers are few; the bound is for safety). */
const LOCAL_MAX_ENTRIES = 1_000;

/**
 * A short-lived in-process copy in front of a shared cache (see
 * `RedisOAuthCachesOptions.localTtlMs`). Hand-written because it is a dozen lines: a Map in
 * insertion order, entries dropped when stale, by `del`, or oldest first beyond the bound.
 * Misses are not kept (a server seen for the first time is then looked up again).
 * @internal
 */
class InProcessFront<K extends string, V> {
  readonly #entries = new Map<K, { value: V; until: number }>();

  constructor(
    private readonly inner: {
      get(key: K): Promise<V | undefined>;
      set(key: K, value: V): Promise<void>;
      del(key: K): Promise<void>;
    },
    private readonly ttlMs: number,
    private readonly now: () => number,
  ) {}

  async get(key: K): Promise<V | undefined> {
    const entry = this.#entries.get(key);
    if (entry !== undefined) {
      if (entry.until > this.now()) return entry.value;
      this.#entries.delete(key);
    }
    const value = await this.inner.get(key);
    if (value !== undefined) this.#keep(key, value);
    return value;
  }

  async set(key: K, value: V): Promise<void> {
    this.#keep(key, value);
    await this.inner.set(key, value);
  }

  async del(key: K): Promise<void> {
    this.#entries.delete(key);
    await this.inner.del(key);
  }

  #keep(key: K, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, { value, until: this.now() + this.ttlMs });
    if (this.#entries.size > LOCAL_MAX_ENTRIES) {
      this.#entries.delete(this.#entries.keys().next().value as K);
    }
  }
}

/**
 * Caches of the OAuth client backed by Redis, shared by every instance of the app:
 * DPoP nonces (so that an instance does not start with a stale nonce and pay a
 * `use_dpop_nonce` round trip), DID documents, handles, and authorization server /
 * protected resource metadata. Spread the result into the `NodeOAuthClient` options.
 * Each cache is best-effort: a Redis failure is a cache miss, never a failed request.
 *
 * @example
 * new NodeOAuthClient({ ...options, ...createRedisOAuthCaches(redis, { keyPrefix: 'myapp:' }) })
 * @param redis a connected ioredis client (ideally with `enableOfflineQueue: false`, so that
 *   an unreachable Redis fails at once instead of after `timeoutMs`); it is not closed here.
 * @publicApi
 */
export function createRedisOAuthCaches(
  redis: RedisCommandClient,
  options: RedisOAuthCachesOptions = {},
): RedisOAuthCaches {
  const prefix = options.keyPrefix ?? 'atproto:';
  assertValidKeyPrefix(prefix, 'createRedisOAuthCaches');
  const timeoutMs = options.timeoutMs ?? 500;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new TypeError('createRedisOAuthCaches: timeoutMs must be a positive number.');
  }
  const ttls = { ...REDIS_OAUTH_CACHE_TTL_MS, ...options.ttlMs };
  for (const [name, ttl] of Object.entries(ttls)) {
    if (!(Number.isFinite(ttl) && ttl >= 1)) {
      throw new TypeError(`createRedisOAuthCaches: ttlMs.${name} must be a positive number.`);
    }
  }
  const localTtlMs = options.localTtlMs ?? 10_000;
  if (!(Number.isFinite(localTtlMs) && localTtlMs >= 0)) {
    throw new TypeError('createRedisOAuthCaches: localTtlMs must be a number of at least 0.');
  }
  const now = options.now ?? Date.now;
  const logger = options.logger ?? new Logger('AtProtoRedisCache');
  const keyRing = () => options.keyRing ?? getInstalledKeyRing();
  const cache = <K extends string, V>(name: keyof RedisOAuthCaches) =>
    new RedisJsonCache<K, V>(
      redis,
      name,
      `${prefix}cache:${NAMESPACES[name]}:`,
      Math.ceil(ttls[name]),
      timeoutMs,
      keyRing,
      logger,
    );
  const metadata = <K extends string, V>(name: keyof RedisOAuthCaches) => {
    const shared = cache<K, V>(name);
    return localTtlMs > 0 ? new InProcessFront<K, V>(shared, localTtlMs, now) : shared;
  };
  return {
    dpopNonceCache: cache('dpopNonceCache'),
    didCache: cache('didCache'),
    handleCache: cache('handleCache'),
    authorizationServerMetadataCache: metadata('authorizationServerMetadataCache'),
    protectedResourceMetadataCache: metadata('protectedResourceMetadataCache'),
  };
}
