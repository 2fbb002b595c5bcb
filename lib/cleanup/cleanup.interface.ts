/**
 * What one cleanup run removed.
 * @publicApi
 */
export interface CleanupResult {
  /** Expired OAuth states deleted. */
  states: number;
  /** OAuth sessions deleted because their retention ran out. */
  oauthSessions: number;
  /** App sessions deleted: expired, idle for too long, or revoked for longer than the grace period. */
  appSessions: number;
  /** API keys deleted: revoked or expired for longer than `apiKeys.revokedGrace`. */
  apiKeys: number;
  /** One-time codes of native logins deleted (used or expired). */
  nativeCodes: number;
  /** Refresh families of native apps deleted (their app session ended). */
  nativeRefreshFamilies: number;
  /** Bot sessions deleted because their refresh JWT expired (each reported as ended). */
  botSessions: number;
  /**
   * OAuth sessions revoked and deleted because nothing uses them any more: their user's last
   * app session was removed and no API key of theirs is active.
   */
  oauthSessionsRevoked: number;
}

/**
 * The deletions one storage backend can do, one batch at a time. Each call deletes at most
 * `batchSize` rows in short statements (lists of keys are cut at 10,000 per statement), so
 * that a run never holds a long lock. Every read is made on the primary database.
 *
 * A DID's OAuth session is *in use* while the DID has an active app session (not revoked,
 * not expired, not idle) or an active API key (not revoked, not expired): a bot's key keeps
 * working after its owner's last browser logged out. The two `…WithoutActiveAppSession`
 * methods answer for both (their names predate API keys).
 * @internal
 */
export interface CleanupTarget {
  deleteExpiredStates(now: number, batchSize: number): Promise<number>;
  deleteExpiredOAuthSessions(now: number, batchSize: number): Promise<number>;
  /** Deletes ended app sessions; returns how many and the DIDs they belonged to. */
  deleteEndedAppSessions(
    cutoffs: { now: number; idleBefore: number; revokedBefore: number },
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }>;
  /**
   * Deletes API keys revoked or expired before `endedBefore`; returns how many and the DIDs
   * they belonged to.
   */
  deleteEndedApiKeys(
    endedBefore: number,
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }>;
  /**
   * Of `dids`, those whose OAuth session is not in use: no active app session left (not
   * revoked, not expired, not idle) and no active API key (not revoked, not expired at
   * `now`). The users whose last device just went, and who run no bot.
   */
  didsWithoutActiveAppSession(
    dids: string[],
    cutoffs: { now: number; idleBefore: number },
  ): Promise<string[]>;
  /**
   * Whether `did`'s OAuth session is in use (an active app session or an active API key;
   * the opposite of {@link CleanupTarget.didsWithoutActiveAppSession} for one DID), in one
   * statement: the check made again under the DID's lock before each revocation.
   */
  isInUse(did: string, cutoffs: { now: number; idleBefore: number }): Promise<boolean>;
  /**
   * Of `dids`, those that have an OAuth session stored in this target's storage and not
   * past its retention at `now`: one indexed lookup per statement for a whole list (cut at
   * 10,000 keys), so that cleanup asks once per batch, not once per DID. Only meaningful
   * when the OAuth sessions are kept in the same storage (not with `redisStore`).
   */
  didsWithOAuthSession(dids: string[], now: number): Promise<string[]>;
  /**
   * DIDs that have an OAuth session not in use (no active app session, no active API key;
   * see {@link CleanupTarget.didsWithoutActiveAppSession}), ordered by DID, after
   * `afterDid` (exclusive), at most `limit`. Page through them by passing the last DID of a
   * page as the next `afterDid`; the order is the database's own (its collation), so
   * compare DIDs only through this method. OAuth sessions past their retention are
   * included (cleanup deletes those anyway).
   */
  oauthSessionsWithoutActiveAppSession(
    cutoffs: { now: number; idleBefore: number },
    afterDid: string | undefined,
    limit: number,
  ): Promise<string[]>;
}
