import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node';

/**
 * A key-value store with the `get/set/del` shape `@atproto/oauth-client-node` expects
 * (`SimpleStore` from `@atproto-labs/simple-store`).
 * @publicApi
 */
export interface AtProtoKeyValueStore<V> {
  /** The value under `key`, or `undefined` if there is none or it has expired. */
  get(key: string): Promise<V | undefined>;
  /** Creates or replaces the value under `key` (an upsert: never fails because it exists). */
  set(key: string, value: V): Promise<void>;
  /** Deletes the value under `key`; deleting a missing key is not an error. */
  del(key: string): Promise<void>;
}

/**
 * Pending authorizations keyed by OAuth `state`. Values hold the PKCE verifier and a DPoP
 * private key: persistent implementations must encrypt them.
 * @publicApi
 */
export type AtProtoStateStore = AtProtoKeyValueStore<NodeSavedState>;

/**
 * OAuth sessions keyed by DID. Values hold tokens and a DPoP private key: persistent
 * implementations must encrypt them, and must retry transient write failures (the OAuth
 * client revokes a session it fails to persist).
 * @publicApi
 */
export type AtProtoSessionStore = AtProtoKeyValueStore<NodeSavedSession>;

/**
 * A stored OAuth session with what a fenced write needs.
 * @publicApi
 */
export interface VersionedSession {
  value: NodeSavedSession;
  /** Increases on every write of this DID's row. */
  version: number;
  /** When the row was last written (login or refresh). */
  updatedAt: Date;
}

/**
 * Session store operations for fenced writes: a writer that read a session under the
 * session lock, and may have lost the lock since, replaces or deletes the session only if
 * it is still the version it read, and never brings back a session deleted meanwhile.
 * Optional for your own stores: without them the module falls back to `get/set/del`
 * (see {@link isVersionedSessionStore}). The built-in TypeORM, Redis and memory session
 * stores implement it.
 * @publicApi
 */
export interface AtProtoVersionedSessionStore extends AtProtoSessionStore {
  /** The session with its version and last write, or `undefined` (missing or expired). */
  getVersioned(did: string): Promise<VersionedSession | undefined>;
  /**
   * Replaces the value only if the stored version is `version`; never inserts. Resolves the
   * new version, or undefined when fenced out (row changed or gone).
   */
  setIfVersion(did: string, value: NodeSavedSession, version: number): Promise<number | undefined>;
  /** Deletes only if the stored version is `version`. Resolves whether it deleted. */
  delIfVersion(did: string, version: number): Promise<boolean>;
}

/**
 * Whether a session store implements the fenced-write operations of
 * {@link AtProtoVersionedSessionStore}.
 * @publicApi
 */
export function isVersionedSessionStore(
  store: AtProtoSessionStore,
): store is AtProtoVersionedSessionStore {
  const s = store as Partial<AtProtoVersionedSessionStore>;
  return (
    typeof s.getVersioned === 'function' &&
    typeof s.setIfVersion === 'function' &&
    typeof s.delIfVersion === 'function'
  );
}

/**
 * The plain information of a stored OAuth session: what can be read without its secrets.
 * @publicApi
 */
export interface AtProtoOAuthSessionInfo {
  did: string;
  /** The authorization server (`iss`). */
  issuer: string;
  /** The user's PDS (the token set's `aud`). */
  pdsUrl: string;
  /** When the access token expires, or `null` if the server did not say. */
  accessExpiresAt: Date | null;
  /** End of retention: the last write plus the store's `ttlMs`. */
  expiresAt: Date;
  /** When this DID's session was first stored, if the store keeps it. */
  createdAt?: Date;
  /** The last write (a login or a refresh). */
  updatedAt: Date;
}

/**
 * A session store that reads a session's plain information without its secrets (on the
 * built-in TypeORM store: one statement on the primary that selects no encrypted column).
 * Optional for your own stores: without it, `AtProtoAuthService.getSessionInfo` reads the
 * whole session (and decrypts it). The built-in TypeORM, Redis and memory stores implement it.
 * @publicApi
 */
export interface AtProtoSessionInfoStore extends AtProtoSessionStore {
  /**
   * The plain information of the session of `did`, or `undefined` (missing, or past its
   * retention as for `get`). Reads where the last write is visible (the primary).
   */
  getInfo(did: string): Promise<AtProtoOAuthSessionInfo | undefined>;
}

/**
 * Whether a session store implements {@link AtProtoSessionInfoStore.getInfo}.
 * @publicApi
 */
export function hasSessionInfo(store: AtProtoSessionStore): store is AtProtoSessionInfoStore {
  return typeof (store as Partial<AtProtoSessionInfoStore>).getInfo === 'function';
}

/**
 * One app session (a signed-in device) as stored.
 * @publicApi
 */
export interface AppSessionRecord {
  /** SHA-256 (lowercase hex) of the opaque session token. */
  id: string;
  /** The DID the session belongs to. */
  did: string;
  createdAt: Date;
  /** Absolute end of the session. */
  expiresAt: Date;
  /** Last request seen; written at most once a minute. */
  lastSeenAt: Date;
  /** When the session was revoked (logout), or `null`. */
  revokedAt: Date | null;
  /** The `User-Agent` that created it (truncated to 512 characters), for "active devices" pages. */
  userAgent: string | null;
}

/**
 * Storage of app sessions. Deciding whether a record is still valid (expiry, idle
 * timeout, revocation) is the caller's job; the store only keeps records.
 * @publicApi
 */
export interface AppSessionStore {
  /**
   * Inserts a new session. Fails if a session with this id exists, unless it is this very
   * record (same id, DID and creation time): a retried insert whose first attempt landed.
   */
  create(record: AppSessionRecord): Promise<void>;
  /** The session with id `id` (revoked and expired ones included), or `undefined`. */
  get(id: string): Promise<AppSessionRecord | undefined>;
  /** Records activity: sets `lastSeenAt`. */
  touch(id: string, at: Date): Promise<void>;
  /**
   * Revokes one session; resolves `true` if this call revoked it (it was not revoked before;
   * a session already revoked at exactly `at` counts as revoked by this call, so that a
   * retried revocation whose first attempt landed still says so).
   */
  revoke(id: string, at: Date): Promise<boolean>;
  /**
   * Revokes every session of `did`; resolves how many were revoked by this call (after a
   * retried attempt, the sessions of `did` revoked at exactly `at`).
   */
  revokeAllForDid(did: string, at: Date): Promise<number>;
  /** Every session of `did` that is not revoked, newest first. */
  listForDid(did: string): Promise<AppSessionRecord[]>;
  /**
   * Sessions whose `revokedAt` is after `since`, oldest revocation first, at most `limit`,
   * read where the last write is visible (the primary). The module polls it every second
   * so that a revocation made on another instance reaches this one's cache even when the
   * Redis invalidation channel lost it. Optional: without it, cached sessions live
   * `appSession.cacheTtl` only.
   */
  revokedSince?(
    since: Date,
    limit: number,
  ): Promise<Array<{ id: string; did: string; revokedAt: Date }>>;
}

/**
 * Options shared by the built-in stores.
 * @publicApi
 */
export interface AtProtoStoreOptions {
  /**
   * How long a value lives after its last `set`, in milliseconds: the state lifetime for a
   * state store, the OAuth-session retention (idle time since the last refresh) for a
   * session store. `get` ignores older values and cleanup deletes them.
   */
  ttlMs: number;
  /** The clock, in epoch milliseconds. @default Date.now */
  now?: () => number;
}
