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
import { assertSessionVersion, firstSessionVersion } from '../session-version.js';
import type {
  AtProtoKeyValueStore,
  AtProtoOAuthSessionInfo,
  AtProtoSessionInfoStore,
  AtProtoStateStore,
  AtProtoStoreOptions,
  AtProtoVersionedSessionStore,
  VersionedSession,
} from '../store.interface.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { assertSessionBelongsTo, assertValidDid, assertValidStateKey } from '../validation.js';
import {
  assertValidKeyPrefix,
  type RedisCommandClient,
  type RedisScriptingClient,
} from './redis-client.js';

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

type Kind = 'state' | 'session';

/** Checks the constructor arguments; returns the key prefix of the store's values. */
function keyPrefixOf(redis: RedisCommandClient, options: RedisStoreOptions, kind: Kind): string {
  const what = `Redis ${kind} store`;
  if (!redis || typeof redis.get !== 'function' || typeof redis.set !== 'function') {
    throw new TypeError(`${what}: pass a connected ioredis client (or a compatible one).`);
  }
  if (!(Number.isFinite(options?.ttlMs) && options.ttlMs >= 1)) {
    throw new TypeError(`${what}: ttlMs must be a positive number of milliseconds.`);
  }
  const prefix = options.keyPrefix ?? DEFAULT_PREFIX;
  assertValidKeyPrefix(prefix, what);
  return `${prefix}${kind}:`;
}

/** The associated-data context of the value under `redisKey`. */
function context(redisKey: string): string {
  return `redis:${redisKey}`;
}

function ringFor(options: RedisStoreOptions, redisKey: string): KeyRing {
  const ring = options.keyRing ?? getInstalledKeyRing();
  if (!ring) throw new AtProtoKeyRingUnavailableError(context(redisKey));
  return ring;
}

function seal<V>(options: RedisStoreOptions, redisKey: string, payload: Payload<V>): string {
  return ringFor(options, redisKey).encrypt(JSON.stringify(payload), context(redisKey));
}

function open<V>(
  options: RedisStoreOptions,
  redisKey: string,
  envelope: string,
  kind: Kind,
): Payload<V> {
  // AtProtoDecryptionError (naming the context, never the value) escapes as the TypeORM
  // stores let it: a value that does not decrypt is an incident, not a missing session.
  const json = ringFor(options, redisKey).decrypt(envelope, context(redisKey));
  const payload = JSON.parse(json) as Partial<Payload<V>> | null;
  if (!payload || typeof payload.e !== 'number' || payload.v === undefined) {
    throw new AtProtoStoreError(
      `An OAuth ${kind} stored in Redis decrypted to an unexpected shape: refusing to use it.`,
    );
  }
  return payload as Payload<V>;
}

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
    private readonly kind: Kind,
    private readonly validate: (key: string, value?: V) => void,
  ) {
    this.#prefix = keyPrefixOf(redis, options, kind);
    this.#redis = redis;
    this.#options = options;
    this.#now = options.now ?? Date.now;
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
    const payload = open<V>(this.#options, redisKey, stored, this.kind);
    if (payload.e <= this.#now()) return undefined;
    this.validate(key, payload.v);
    return payload.v;
  }

  async set(key: string, value: V): Promise<void> {
    this.validate(key, value);
    const redisKey = this.#prefix + key;
    const ttlMs = Math.ceil(this.#options.ttlMs);
    const envelope = seal(this.#options, redisKey, { e: this.#now() + ttlMs, v: value });
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

// A session's Redis value: `#<version>:<updatedAt>:<expiresAt>:<envelope>`, the version,
// the last write and the end of retention (epoch milliseconds, store clock) in clear beside
// the sealed value, because the Lua scripts below compare them and cannot decrypt. The
// envelope is bound to the key exactly as before (associated data `redis:` + the key), and
// holds the value and its expiry as in 0.1.0. A value written by 0.1.0 is the bare envelope
// (it starts with `v1.`, never `#`): it reads as version 0, and any write replaces it with
// the new form. The clear fields are not secret; someone able to write them can already
// delete or replace the whole value, so they are not authenticated.
const VERSIONED = /^#(\d{1,15}):(\d{1,15}):(\d{1,15}):(.+)$/s;

// Lua (Redis 2.6+): `string.match` reads the clear fields; %d formats whole numbers without
// an exponent. Each script touches one key (KEYS[1]), so they work on Redis Cluster too.
// EVAL sends the script text each time (a few hundred bytes), on writes only (login,
// refresh, logout); reads are a plain GET.
//
// A write may run twice: when the connection is lost after Redis ran the script but before
// the reply arrived, ioredis resends the command on reconnect (autoResendUnfulfilledCommands,
// its default), or the command fails and the store retries it. Neither can tell whether the
// first run happened, so the scripts make a second run answer as the first did: a value
// that already holds exactly what this write writes (`<updatedAt>:<expiresAt>:<envelope>`,
// the envelope with a fresh random IV, so no other write can be equal) is this write's own.
const LUA_HEADER = `
local function fields(value)
  if not value then return nil end
  local v, u, e = string.match(value, '^#(%d+):(%d+):(%d+):')
  if v then return tonumber(v), tonumber(e) end
  return 0, nil
end
local function ours(value, tail)
  if not value then return nil end
  local v, rest = string.match(value, '^#(%d+):(.*)$')
  if rest == tail then return tonumber(v) end
  return nil
end
local function put(version, tail, ttl)
  redis.call('SET', KEYS[1], '#' .. string.format('%d', version) .. ':' .. tail, 'PX', ttl)
end
`;

/** set: replaces (version + 1) or creates (ARGV[1]). Replies the new version.
 *  ARGV: first version, tail (`<updatedAt>:<expiresAt>:<envelope>`), TTL. */
const SET_SCRIPT = `${LUA_HEADER}
local current = redis.call('GET', KEYS[1])
local done = ours(current, ARGV[2])
if done then return done end
local version = fields(current)
if version then version = version + 1 else version = tonumber(ARGV[1]) end
put(version, ARGV[2], ARGV[3])
return version
`;

/** setIfVersion: replaces only if the stored version is ARGV[1] and the value has not
 *  expired by the store clock (ARGV[2]); never creates. Replies the new version, or -1.
 *  ARGV: version, now, tail, TTL. */
const SET_IF_VERSION_SCRIPT = `${LUA_HEADER}
local current = redis.call('GET', KEYS[1])
local expected = tonumber(ARGV[1])
if ours(current, ARGV[3]) == expected + 1 then return expected + 1 end
local version, expires = fields(current)
if not version or version ~= expected then return -1 end
if expires and expires <= tonumber(ARGV[2]) then return -1 end
put(expected + 1, ARGV[3], ARGV[4])
return expected + 1
`;

/** delIfVersion: deletes only if the stored version is ARGV[1]. Replies 1 or 0. */
const DEL_IF_VERSION_SCRIPT = `${LUA_HEADER}
local version = fields(redis.call('GET', KEYS[1]))
if not version or version ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
`;

/**
 * OAuth session store on Redis: `<keyPrefix>session:<did>` holds the encrypted session
 * (token set, DPoP key) with its version, and expires `ttlMs` (the OAuth-session
 * retention) after its last write. DIDs are validated and a session whose token set
 * belongs to another DID is refused, on write and on read. Writes are retried on transient
 * failures, because the OAuth client revokes a session it cannot persist. Writes run as
 * Lua scripts (EVAL) that keep the version beside the sealed value, so the client needs
 * `eval` ({@link RedisScriptingClient}); the fenced writes of
 * {@link AtProtoVersionedSessionStore} compare it atomically. `getInfo` is one `GET` and
 * one decryption: the access-token expiry, issuer and PDS are inside the sealed value.
 *
 * @example
 * new RedisSessionStore(redis, { ttlMs: 90 * 24 * 3_600_000, keyPrefix: 'myapp:atproto:' })
 * @publicApi
 */
export class RedisSessionStore implements AtProtoVersionedSessionStore, AtProtoSessionInfoStore {
  readonly #redis: RedisScriptingClient;
  readonly #options: RedisStoreOptions;
  readonly #now: () => number;
  readonly #prefix: string;

  /** @param redis a connected ioredis client; the store never creates nor closes connections. */
  constructor(redis: RedisScriptingClient, options: RedisStoreOptions) {
    this.#prefix = keyPrefixOf(redis, options, 'session');
    if (typeof redis.eval !== 'function') {
      throw new TypeError(
        'Redis session store: the client needs eval() (an ioredis client has it): writes are Lua scripts.',
      );
    }
    this.#redis = redis;
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  async get(did: string): Promise<NodeSavedSession | undefined> {
    return (await this.getVersioned(did))?.value;
  }

  async getVersioned(did: string): Promise<VersionedSession | undefined> {
    const read = await this.#read(did);
    return read && { value: read.value, version: read.version, updatedAt: read.updatedAt };
  }

  async getInfo(did: string): Promise<AtProtoOAuthSessionInfo | undefined> {
    // The clear header holds the write time and the end of retention, but not the access
    // expiry: that needs the sealed value, so this is a full read (one GET, one decryption).
    const read = await this.#read(did);
    if (!read) return undefined;
    const { tokenSet } = read.value;
    return {
      did,
      issuer: tokenSet.iss,
      pdsUrl: tokenSet.aud,
      accessExpiresAt: tokenSet.expires_at ? new Date(tokenSet.expires_at) : null,
      expiresAt: read.expiresAt,
      updatedAt: read.updatedAt,
    };
  }

  /** The session of `did` with its version, write time and end of retention, or undefined. */
  async #read(
    did: string,
  ): Promise<
    { value: NodeSavedSession; version: number; updatedAt: Date; expiresAt: Date } | undefined
  > {
    assertValidDid(did);
    const redisKey = this.#prefix + did;
    const stored = await withTransientRetry(
      'Reading an OAuth session from Redis',
      () => this.#redis.get(redisKey),
      this.#options.retry,
    );
    if (stored === null || stored === undefined) return undefined;
    const { version, updatedAt, envelope } = parseStored(stored);
    const payload = open<NodeSavedSession>(this.#options, redisKey, envelope, 'session');
    if (payload.e <= this.#now()) return undefined;
    assertSessionBelongsTo(did, payload.v?.tokenSet?.sub);
    return {
      value: payload.v,
      version,
      // A 0.1.0 value has no write time: its expiry less the retention is that write time
      // as long as the retention has not been changed since.
      updatedAt: new Date(updatedAt ?? payload.e - Math.ceil(this.#options.ttlMs)),
      expiresAt: new Date(payload.e),
    };
  }

  async set(did: string, value: NodeSavedSession): Promise<void> {
    const w = this.#prepare(did, value);
    await withTransientRetry(
      'Saving an OAuth session to Redis',
      () =>
        this.#redis.eval(SET_SCRIPT, 1, w.redisKey, firstSessionVersion(w.now), w.tail, w.ttlMs),
      this.#options.retry,
    );
  }

  async setIfVersion(
    did: string,
    value: NodeSavedSession,
    version: number,
  ): Promise<number | undefined> {
    assertSessionVersion(version);
    const w = this.#prepare(did, value);
    // Safe to run twice (see the scripts): a second run of a write that landed replies its
    // version again, so a retry after a lost reply does not report a false "fenced out".
    const reply = await withTransientRetry(
      'Saving an OAuth session to Redis',
      () => this.#redis.eval(SET_IF_VERSION_SCRIPT, 1, w.redisKey, version, w.now, w.tail, w.ttlMs),
      this.#options.retry,
    );
    const next = Number(reply);
    return next > 0 ? next : undefined;
  }

  async del(did: string): Promise<void> {
    assertValidDid(did);
    const redisKey = this.#prefix + did;
    await withTransientRetry(
      'Deleting an OAuth session from Redis',
      () => this.#redis.del(redisKey),
      this.#options.retry,
    );
  }

  async delIfVersion(did: string, version: number): Promise<boolean> {
    assertValidDid(did);
    assertSessionVersion(version);
    const redisKey = this.#prefix + did;
    let attempt = 0;
    return withTransientRetry(
      'Deleting an OAuth session from Redis',
      async () => {
        attempt++;
        const reply = Number(await this.#redis.eval(DEL_IF_VERSION_SCRIPT, 1, redisKey, version));
        if (reply === 1) return true;
        if (attempt === 1) return false;
        // Refused on a retry: if the key is gone, the version we meant to delete is gone (by
        // our first attempt or another deleter) and no newer session was removed. A deletion
        // leaves nothing to recognize it by, so when ioredis itself resent the command after
        // a lost reply (within one attempt), this resolves false although the first run
        // deleted the session: the caller then reports a fenced-out deletion of a session
        // that is gone either way.
        return (await this.#redis.get(redisKey)) === null;
      },
      this.#options.retry,
    );
  }

  #prepare(did: string, value: NodeSavedSession) {
    assertValidDid(did);
    assertSessionBelongsTo(did, value?.tokenSet?.sub);
    const redisKey = this.#prefix + did;
    const now = this.#now();
    const ttlMs = Math.ceil(this.#options.ttlMs);
    const expiresAt = now + ttlMs;
    const envelope = seal(this.#options, redisKey, { e: expiresAt, v: value });
    // What follows `#<version>:` in the stored value (see VERSIONED).
    return { redisKey, now, ttlMs, tail: `${now}:${expiresAt}:${envelope}` };
  }
}

/** The clear fields and the envelope of a stored session value (see VERSIONED). */
function parseStored(stored: string): {
  version: number;
  updatedAt: number | undefined;
  envelope: string;
} {
  if (!stored.startsWith('#')) return { version: 0, updatedAt: undefined, envelope: stored };
  const m = VERSIONED.exec(stored);
  if (!m) {
    throw new AtProtoStoreError(
      'An OAuth session stored in Redis has a malformed version header: refusing to use it.',
    );
  }
  return { version: Number(m[1]), updatedAt: Number(m[2]), envelope: m[4]! };
}
