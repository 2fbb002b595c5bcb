/**
 * One API key as stored. The key itself is not here: only its SHA-256 (`id`).
 * @publicApi
 */
export interface AtProtoApiKeyRecord {
  /** SHA-256 (lowercase hex) of the whole key; the primary key. */
  id: string;
  /** The DID the key acts as. */
  did: string;
  /** What its owner called it ("deploy bot"). */
  name: string;
  /** The configured prefix and the first 8 random characters, to recognize the key by. */
  displayPrefix: string;
  /** Scopes the key is narrowed to, or `null` for a key that is not narrowed. */
  scopes: string[] | null;
  createdAt: Date;
  /** When the key stops working, or `null` for a key that does not expire. */
  expiresAt: Date | null;
  /** When it was revoked, or `null`. */
  revokedAt: Date | null;
  /** Last successful validation, written at most once per `apiKeys.lastUsedInterval`. */
  lastUsedAt: Date | null;
}

/**
 * Storage of API keys. Deciding whether a key is usable (revoked, expired) is the caller's
 * job, except in {@link AtProtoApiKeyStore.hasActive}, which answers it in one query.
 * @publicApi
 */
export interface AtProtoApiKeyStore {
  /**
   * Inserts a new key. Fails if a key with this id exists, unless it is this very record
   * (same id, DID, name and creation time): a retried insert whose first attempt landed.
   */
  create(record: AtProtoApiKeyRecord): Promise<void>;
  /** The key with id `id` (revoked and expired ones included), or `undefined`. */
  get(id: string): Promise<AtProtoApiKeyRecord | undefined>;
  /** Every stored key of `did` (revoked and expired ones included), newest first. */
  listForDid(did: string): Promise<AtProtoApiKeyRecord[]>;
  /**
   * Revokes key `id` if it belongs to `did` and is not revoked yet, in one conditional
   * write; resolves whether this call revoked it (a key already revoked at exactly `at`
   * counts, so that a retried revocation whose first attempt landed still says so).
   */
  revoke(id: string, did: string, at: Date): Promise<boolean>;
  /**
   * Sets `lastUsedAt` to `at` only if it is unset or before `staleBefore`, in one
   * conditional write (so that several instances write once per interval between them);
   * resolves whether this call wrote it.
   */
  touch(id: string, at: Date, staleBefore: Date): Promise<boolean>;
  /** Whether `did` has a key that is not revoked and not expired at `now`. */
  hasActive(did: string, now: Date): Promise<boolean>;
  /**
   * Keys whose `revokedAt` is after `since`, oldest revocation first, at most `limit`, read
   * where the last write is visible (the primary). The module polls it every second so that
   * a key revoked on another instance is dropped from this one's cache. Optional: without
   * it, cached keys live `appSession.cacheTtl` only.
   */
  revokedSince?(
    since: Date,
    limit: number,
  ): Promise<Array<{ id: string; did: string; revokedAt: Date }>>;
}
