import { Logger } from '@nestjs/common';
import type { AtProtoAuthService } from '../oauth/at-proto-auth.service.js';
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
}

/**
 * Deletes expired OAuth states, OAuth sessions past their retention, and ended app
 * sessions, batch by batch until none is left. When it removes a user's last app session,
 * it revokes the user's OAuth session at the authorization server (best effort, logged)
 * and deletes it. Safe to interrupt at any point: the next run continues where it stopped.
 * @internal
 */
export class CleanupRunner {
  readonly #logger = new Logger('AtProtoCleanup');

  constructor(
    private readonly target: CleanupTarget,
    private readonly auth: Pick<AtProtoAuthService, 'revoke'>,
    /** Whether an OAuth session is stored for a DID (in whichever store holds them). */
    private readonly hasOAuthSession: (did: string) => Promise<boolean>,
    private readonly settings: CleanupSettings,
  ) {}

  async run(now = Date.now()): Promise<CleanupResult> {
    const { batchSize } = this.settings;
    const result: CleanupResult = {
      states: 0,
      oauthSessions: 0,
      appSessions: 0,
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
    for (;;) {
      const { deleted, dids } = await this.target.deleteEndedAppSessions(cutoffs, batchSize);
      if (deleted === 0) break;
      result.appSessions += deleted;
      // Checked per batch, right after the deletion, so that an interrupted run loses at most
      // one batch's revocations (those OAuth sessions then expire with their retention).
      for (const did of await this.target.didsWithoutActiveAppSession(dids, cutoffs)) {
        try {
          if (!(await this.hasOAuthSession(did))) continue;
          await this.auth.revoke(did); // best effort at the server; always deletes locally
          result.oauthSessionsRevoked++;
        } catch (error) {
          this.#logger.warn(`Cleanup could not revoke an OAuth session: ${describeError(error)}`);
        }
      }
    }
    if (result.states + result.oauthSessions + result.appSessions > 0) {
      this.#logger.log(
        `Cleanup removed ${result.states} states, ${result.oauthSessions} OAuth sessions, ` +
          `${result.appSessions} app sessions; revoked ${result.oauthSessionsRevoked} OAuth sessions.`,
      );
    }
    return result;
  }
}
