/**
 * A one-time code as stored.
 * @internal
 */
export interface NativeCodeRecord {
  /** SHA-256 (lowercase hex) of the code. */
  id: string;
  did: string;
  redirectUri: string;
  /** The S256 PKCE challenge. */
  codeChallenge: string;
  createdAt: Date;
  expiresAt: Date;
  usedAt: Date | null;
}

/**
 * A refresh-token family (one per native app session) as stored.
 * @internal
 */
export interface NativeRefreshFamilyRecord {
  /** The app session's id. */
  id: string;
  did: string;
  currentJti: string;
  previousJti: string | null;
  /** When the current token was issued (its `iat`). */
  rotatedAt: Date;
  createdAt: Date;
  /** The app session's absolute end (the refresh tokens' `exp`). */
  expiresAt: Date;
  revokedAt: Date | null;
}

/**
 * Storage of native one-time codes and refresh-token families. Each state change is one
 * conditional UPDATE, so that two instances acting on the same row at once never both win;
 * reads go to the primary; a retried write whose first attempt landed answers as that first
 * attempt did; cleanup deletes in capped batches.
 * @internal
 */
export interface NativeTokenStore {
  /**
   * Inserts a code. Fails if the id exists, unless it is this very record (a retried insert
   * whose first attempt landed).
   */
  createCode(record: NativeCodeRecord): Promise<void>;
  /**
   * Consumes a code with one conditional UPDATE: only if it is unused, not expired at `at`,
   * and bound to exactly this challenge and redirect URI. Resolves the code (with `usedAt`
   * = `at`) when this call consumed it, `undefined` otherwise (unknown, used, expired, or
   * bound to something else: nothing is changed then).
   */
  consumeCode(
    id: string,
    binding: { codeChallenge: string; redirectUri: string },
    at: Date,
  ): Promise<NativeCodeRecord | undefined>;
  /** Whether `did` has a code that is unused and not expired at `now` (a login under way). */
  hasPendingCode(did: string, now: Date): Promise<boolean>;
  /** Deletes up to `batchSize` codes that expired before `now`; resolves how many. */
  deleteExpiredCodes(now: number, batchSize: number): Promise<number>;

  /** Inserts a family; a retried insert whose first attempt landed succeeds. */
  createFamily(record: NativeRefreshFamilyRecord): Promise<void>;
  /** The family with id `id` (revoked ones included), or `undefined`; read on the primary. */
  getFamily(id: string): Promise<NativeRefreshFamilyRecord | undefined>;
  /**
   * Rotates the family with one conditional UPDATE (`… WHERE id = ? AND current_jti = ?`,
   * not revoked): `presentedJti` becomes the previous token and `nextJti` the current one,
   * issued at `at`. Resolves whether this call rotated it (`false`: another rotation or a
   * revocation came first).
   */
  rotateFamily(id: string, presentedJti: string, nextJti: string, at: Date): Promise<boolean>;
  /** Revokes the family; resolves whether this call did (it was not revoked before). */
  revokeFamily(id: string, at: Date): Promise<boolean>;
  /**
   * Deletes up to `batchSize` ended families: expired before `now`, revoked before
   * `revokedBefore`, or whose app session no longer exists (cleanup deleted it). Resolves
   * how many.
   */
  deleteEndedFamilies(
    cutoffs: { now: number; revokedBefore: number },
    batchSize: number,
  ): Promise<number>;
}
