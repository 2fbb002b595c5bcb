import { Logger } from '@nestjs/common';
import { API_KEY_DEFAULTS } from '../api-keys/api-key-options.js';
import { describeError } from '../errors/describe-error.js';
import type { CleanupResult, CleanupTarget } from './cleanup.interface.js';

/**
 * Settings of one cleanup run.
 * @internal
 */
export interface CleanupSettings {
  /** Rows deleted per statement. @default 1000 */
  batchSize: number;
  /** App sessions idle for longer than this have ended. */
  appSessionIdleTtlMs: number;
  /** Revoked app sessions are kept this long (for "recent devices" pages) before deletion. */
  revokedGraceMs: number;
  /**
   * Revoked and expired API keys are kept this long (their owner still sees them, marked
   * ended) before deletion: `apiKeys.revokedGrace`. @default 86400000 (1 day)
   */
  apiKeyRevokedGraceMs?: number;
  /**
   * Also revoke, on every run, OAuth sessions nothing uses (no active app session, no active
   * API key; found by one anti-join per page), so that a revocation that failed before
   * (Redis or the authorization server down at logout or in an earlier run) is retried.
   * @default true
   */
  revokeUnusedOAuthSessions?: boolean;
  /**
   * Revocations in flight at once (each under its own DID's lock): a revocation waits on the
   * authorization server, and one at a time would make a run of many last as long as all
   * those round trips end to end. @default 8
   */
  revokeConcurrency?: number;
}

/** See {@link CleanupSettings.revokeConcurrency}. @internal */
export const DEFAULT_REVOKE_CONCURRENCY = 8;

/**
 * What else a run includes, outside the storage's cleanup target: native apps' one-time
 * codes and refresh families, and what keeps an OAuth session in use besides app sessions
 * and API keys (a native login whose code is not redeemed yet: the app session is created
 * when it is).
 * @internal
 */
export interface CleanupExtras {
  inUse?: (did: string) => Promise<boolean>;
  /**
   * Of `dids`, those with an OAuth session stored (not past its retention at `now`), asked
   * for a whole batch at once: given when the OAuth sessions live where the cleanup target
   * can list them in one statement (see `CleanupTarget.didsWithOAuthSession`). Without it,
   * the runner asks `hasOAuthSession` for each DID.
   */
  oauthSessionsAmong?: (dids: string[], now: number) => Promise<string[]>;
  /** Deletes at most `batchSize` expired codes; resolves how many. */
  nativeCodes?: (now: number, batchSize: number) => Promise<number>;
  /** Deletes at most `batchSize` ended refresh families; resolves how many. */
  nativeRefreshFamilies?: (now: number, batchSize: number) => Promise<number>;
  /** Deletes at most `batchSize` bot sessions whose refresh JWT expired; resolves how many. */
  botSessions?: (now: number, batchSize: number) => Promise<number>;
}

/** What the runner asks of the OAuth side. */
export interface CleanupRevoker {
  /** See `AtProtoAuthService.revoke`: resolves whether it revoked; throws when it could not. */
  revoke(did: string, ifUnused: { since: Date; inUse: () => Promise<boolean> }): Promise<boolean>;
}

/**
 * Deletes expired OAuth states, OAuth sessions past their retention, ended app sessions and
 * API keys ended for longer than their grace, batch by batch until none is left, and revokes
 * the OAuth sessions nothing uses any more: no active app session (the user's last device
 * went) and no active API key (an active key keeps its DID's OAuth session, which its
 * requests act through).
 *
 * A revocation is decided again under the user's session lock right before it happens
 * (`AtProtoAuthService.revoke` with `ifUnused`): a user who signs in again while the run is
 * under way keeps the new session (it is in use, or was written after the run began).
 * Only revocations that happened are counted; one that failed leaves the OAuth session in
 * place and the next run tries again (the anti-join pass finds it). Safe to interrupt at any
 * point: the next run continues where it stopped.
 *
 * The work per batch is a handful of statements whatever the number of DIDs in it (which
 * are unused, which have an OAuth session); only the candidates take their lock, up to
 * `revokeConcurrency` at once, while the next batches are deleted (see `#deleteAndRevoke`).
 * @internal
 */
export class CleanupRunner {
  readonly #logger = new Logger('AtProtoCleanup');

  constructor(
    private readonly target: CleanupTarget,
    private readonly auth: CleanupRevoker,
    /** Whether an OAuth session is stored for a DID (in whichever store holds them). */
    private readonly hasOAuthSession: (did: string) => Promise<boolean>,
    private readonly settings: CleanupSettings,
    private readonly extras: CleanupExtras = {},
  ) {}

  async run(now = Date.now()): Promise<CleanupResult> {
    const { batchSize } = this.settings;
    const result: CleanupResult = {
      states: 0,
      oauthSessions: 0,
      appSessions: 0,
      apiKeys: 0,
      nativeCodes: 0,
      nativeRefreshFamilies: 0,
      botSessions: 0,
      oauthSessionsRevoked: 0,
    };
    for (let n; (n = await this.target.deleteExpiredStates(now, batchSize)) > 0;)
      result.states += n;
    for (let n; (n = await this.target.deleteExpiredOAuthSessions(now, batchSize)) > 0;) {
      result.oauthSessions += n;
    }
    const cutoffs = {
      now,
      idleBefore: now - this.settings.appSessionIdleTtlMs,
      revokedBefore: now - this.settings.revokedGraceMs,
    };
    const tried = new Set<string>();
    const antiJoin = this.settings.revokeUnusedOAuthSessions ?? true;
    const revocations = new RevocationPool(
      (did) => this.#revoke(did, cutoffs),
      Math.max(1, this.settings.revokeConcurrency ?? DEFAULT_REVOKE_CONCURRENCY),
    );
    try {
      await this.#deleteAndRevoke(cutoffs, tried, revocations, antiJoin, result);
    } finally {
      // Never leave revocations running behind a run that ended (its caller may close the
      // connections next): those not started are dropped (the next run finds them).
      await revocations.stop();
    }
    result.oauthSessionsRevoked = revocations.revoked;
    if (Object.values(result).some((n) => n > 0)) {
      this.#logger.log(
        `Cleanup removed ${result.states} states, ${result.oauthSessions} OAuth sessions, ` +
          `${result.appSessions} app sessions, ${result.apiKeys} API keys, ` +
          `${result.nativeCodes + result.nativeRefreshFamilies} native codes and refresh families; ` +
          `revoked ${result.oauthSessionsRevoked} OAuth sessions.`,
      );
    }
    return result;
  }

  async #deleteAndRevoke(
    cutoffs: { now: number; idleBefore: number; revokedBefore: number },
    tried: Set<string>,
    revocations: RevocationPool,
    antiJoin: boolean,
    result: CleanupResult,
  ): Promise<void> {
    const { now } = cutoffs;
    const { batchSize } = this.settings;
    // After each batch its candidates join the revocations, and the next batch is deleted
    // once every earlier candidate has started (at most `revokeConcurrency` still in
    // flight): deleting and revoking overlap, and an interrupted run loses at most one
    // batch's revocations plus those in flight, which the anti-join pass of the next run
    // retries. Without that pass, each batch's revocations end before the next batch.
    const pace = () => (antiJoin ? revocations.started() : revocations.settled());
    for (;;) {
      const { deleted, dids } = await this.target.deleteEndedAppSessions(cutoffs, batchSize);
      if (deleted === 0) break;
      result.appSessions += deleted;
      revocations.add(await this.#unusedWithSession(dids, cutoffs, tried));
      await pace();
    }
    const keysEndedBefore =
      now - (this.settings.apiKeyRevokedGraceMs ?? API_KEY_DEFAULTS.revokedGraceMs);
    for (;;) {
      const { deleted, dids } = await this.target.deleteEndedApiKeys(keysEndedBefore, batchSize);
      if (deleted === 0) break;
      result.apiKeys += deleted;
      // A DID whose last (ended) key just went may have nothing else using its OAuth session:
      // the same per-batch check as for app sessions.
      revocations.add(await this.#unusedWithSession(dids, cutoffs, tried));
      await pace();
    }
    const { nativeCodes, nativeRefreshFamilies, botSessions } = this.extras;
    if (botSessions) {
      for (let n; (n = await botSessions(now, batchSize)) > 0;) result.botSessions += n;
    }
    if (nativeCodes) {
      for (let n; (n = await nativeCodes(now, batchSize)) > 0;) result.nativeCodes += n;
    }
    if (nativeRefreshFamilies) {
      for (let n; (n = await nativeRefreshFamilies(now, batchSize)) > 0;) {
        result.nativeRefreshFamilies += n;
      }
    }
    if (antiJoin) {
      for (let after: string | undefined; ;) {
        const page = await this.target.oauthSessionsWithoutActiveAppSession(
          cutoffs,
          after,
          batchSize,
        );
        // DIDs whose revocation is still in flight are in `tried`: never revoked twice.
        const fresh = page.filter((did) => !tried.has(did));
        for (const did of fresh) tried.add(did);
        revocations.add(fresh);
        await revocations.started();
        if (page.length < batchSize) break;
        after = page.at(-1);
      }
    }
    await revocations.settled();
  }

  /**
   * Those of `dids` whose OAuth session nothing uses any more and which have one (each DID
   * considered once per run): the candidates for revocation. Which DIDs are unused and which
   * have an OAuth session are asked for the whole list at once; only the candidates take
   * their lock (where the decision is made again, see {@link CleanupRunner.run}).
   */
  async #unusedWithSession(
    dids: string[],
    cutoffs: { now: number; idleBefore: number },
    tried: Set<string>,
  ): Promise<string[]> {
    const unused: string[] = [];
    for (const did of await this.target.didsWithoutActiveAppSession(dids, cutoffs)) {
      if (tried.has(did)) continue;
      tried.add(did);
      unused.push(did);
    }
    return this.#withSession(unused, cutoffs.now);
  }

  /** Those of `dids` that have an OAuth session; a failed read counts as none (logged). */
  async #withSession(dids: string[], now: number): Promise<string[]> {
    if (dids.length === 0) return [];
    const among = this.extras.oauthSessionsAmong;
    if (among) {
      try {
        return await among(dids, now);
      } catch (error) {
        // As for one DID below: these DIDs wait for the next run's anti-join pass.
        this.#logger.warn(`Cleanup could not read OAuth sessions: ${describeError(error)}`);
        return [];
      }
    }
    const out: string[] = [];
    for (const did of dids) if (await this.#hasSession(did)) out.push(did);
    return out;
  }

  async #hasSession(did: string): Promise<boolean> {
    try {
      return await this.hasOAuthSession(did);
    } catch (error) {
      this.#logger.warn(`Cleanup could not read an OAuth session: ${describeError(error)}`);
      return false;
    }
  }

  /**
   * Revokes if still unused (decided under the DID's lock, by the same query as the
   * decision: no active app session and no active API key); failures are logged, not counted.
   */
  async #revoke(did: string, cutoffs: { now: number; idleBefore: number }): Promise<boolean> {
    try {
      return await this.auth.revoke(did, {
        since: new Date(cutoffs.now),
        inUse: async () =>
          (await this.target.isInUse(did, cutoffs)) || (await this.extras.inUse?.(did)) === true,
      });
    } catch (error) {
      this.#logger.warn(
        `Cleanup could not revoke an OAuth session; the next run tries again: ${describeError(error)}`,
      );
      return false;
    }
  }
}

/**
 * Revocations of one run: at most `concurrency` in flight, the rest waiting in order.
 * `revoke` never rejects (failures are logged and count as not revoked).
 */
class RevocationPool {
  readonly #waiting: string[] = [];
  #inFlight = 0;
  #revoked = 0;
  #stopped = false;
  /** Woken whenever a revocation ends. */
  #wake: (() => void) | undefined;

  constructor(
    private readonly revoke: (did: string) => Promise<boolean>,
    private readonly concurrency: number,
  ) {}

  /** Revocations that happened so far. */
  get revoked(): number {
    return this.#revoked;
  }

  add(dids: readonly string[]): void {
    if (this.#stopped) return;
    this.#waiting.push(...dids);
    this.#pump();
  }

  /** Resolves once every DID added so far has started (none waiting). */
  started(): Promise<void> {
    return this.#until(() => this.#waiting.length === 0);
  }

  /** Resolves once every DID added so far has ended. */
  settled(): Promise<void> {
    return this.#until(() => this.#waiting.length === 0 && this.#inFlight === 0);
  }

  /** Drops the waiting DIDs and resolves once those in flight have ended. */
  stop(): Promise<void> {
    this.#stopped = true;
    this.#waiting.length = 0;
    return this.settled();
  }

  #pump(): void {
    while (this.#inFlight < this.concurrency && this.#waiting.length > 0) {
      const did = this.#waiting.shift()!;
      this.#inFlight++;
      const ended = (done: boolean) => {
        if (done) this.#revoked++;
        this.#inFlight--;
        this.#pump();
        this.#wake?.();
      };
      void this.revoke(did).then(ended, () => ended(false));
    }
  }

  async #until(condition: () => boolean): Promise<void> {
    while (!condition()) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}
