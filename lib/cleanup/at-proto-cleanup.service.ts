import {
  Inject,
  Injectable,
  Logger,
  Optional,
  type OnApplicationBootstrap,
  type BeforeApplicationShutdown,
} from '@nestjs/common';
import {
  AT_PROTO_MODULE_EXTRAS,
  AT_PROTO_OPTIONS,
  AT_PROTO_SESSION_STORE,
} from '../at-proto.constants.js';
import type { AtProtoSessionStore } from '../storage/store.interface.js';
import { TypeOrmSessionStore } from '../storage/typeorm/typeorm-session.store.js';
import type { AtProtoModuleExtras } from '../options/at-proto-options.interface.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { AtProtoAuthService } from '../oauth/at-proto-auth.service.js';
import { describeError } from '../errors/describe-error.js';
import { AT_PROTO_CLEANUP_TARGET } from '../at-proto.internal-constants.js';
import type { CleanupResult, CleanupTarget } from './cleanup.interface.js';
import { CleanupRunner } from './cleanup.service.js';
import { AT_PROTO_NATIVE_STORE } from '../native/native.constants.js';
import type { NativeTokenStore } from '../native/native-store.interface.js';
import { AtProtoNativeService } from '../native/native.service.js';
import { AtProtoBotSessionService } from '../bots/bot-session.service.js';

/**
 * Deletes expired OAuth states, OAuth sessions past their retention, and ended app
 * sessions, in batches; revokes a user's OAuth session when their last app session goes.
 * Runs on a schedule (`cleanup` options); call {@link AtProtoCleanupService.runOnce} to run
 * it now (e.g. from a CLI or your own scheduler).
 * @publicApi
 */
@Injectable()
export class AtProtoCleanupService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  readonly #logger = new Logger('AtProtoCleanup');
  readonly #runner: CleanupRunner;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<CleanupResult> | undefined;

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    @Inject(AT_PROTO_CLEANUP_TARGET) target: CleanupTarget,
    @Inject(AT_PROTO_MODULE_EXTRAS) private readonly extras: AtProtoModuleExtras,
    auth: AtProtoAuthService,
    @Inject(AT_PROTO_SESSION_STORE) sessionStore: AtProtoSessionStore,
    native: AtProtoNativeService,
    @Inject(AT_PROTO_NATIVE_STORE) nativeStore: NativeTokenStore,
    @Optional() bots?: AtProtoBotSessionService,
  ) {
    const hasOAuthSession = async (did: string) => (await sessionStore.get(did)) !== undefined;
    const revokedGraceMs = options.cleanup.revokedGraceMs;
    this.#runner = new CleanupRunner(
      target,
      auth,
      hasOAuthSession,
      {
        batchSize: options.cleanup.batchSize,
        appSessionIdleTtlMs: options.appSession.idleTtlMs,
        revokedGraceMs,
        revokeUnusedOAuthSessions: options.cleanup.revokeUnusedOAuthSessions,
        apiKeyRevokedGraceMs: options.apiKeys.revokedGraceMs,
      },
      {
        // A native login whose one-time code is not redeemed yet has an OAuth session and no
        // app session for up to a minute: it is in use.
        inUse: (did) => native.hasPendingLogin(did),
        // OAuth sessions in the database the cleanup target deletes from: one statement per
        // batch tells which of its DIDs have one. Elsewhere (redisStore), one read per DID.
        ...(sessionStore instanceof TypeOrmSessionStore
          ? {
              oauthSessionsAmong: (dids: string[], now: number) =>
                target.didsWithOAuthSession(dids, now),
            }
          : {}),
        nativeCodes: (now, batchSize) => nativeStore.deleteExpiredCodes(now, batchSize),
        nativeRefreshFamilies: (now, batchSize) =>
          nativeStore.deleteEndedFamilies({ now, revokedBefore: now - revokedGraceMs }, batchSize),
        ...(bots
          ? { botSessions: (now: number, batchSize: number) => bots.sweepExpired(now, batchSize) }
          : {}),
      },
    );
  }

  /** Runs one cleanup now; concurrent calls in this process share one run. */
  runOnce(now?: number): Promise<CleanupResult> {
    this.#running ??= this.#runner.run(now).finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** @internal */
  onApplicationBootstrap(): void {
    const { enabled, intervalMs } = this.options.cleanup;
    // With BullMQ, its job scheduler runs cleanup once per tick for all instances.
    if (!enabled || this.extras.bullmq) return;
    // In-process schedule: every instance runs it (deletions are idempotent, so several
    // instances without BullMQ only repeat work). unref(): a tick never keeps the process up.
    this.#timer = setInterval(() => {
      this.runOnce().catch((error: unknown) => {
        this.#logger.warn(
          `Cleanup failed; it will run again in ${intervalMs} ms: ${describeError(error)}`,
        );
      });
    }, intervalMs);
    this.#timer.unref();
  }

  /**
   * Stops the timer and waits for a run in progress, before any connection closes (shutdown
   * hooks of one module run concurrently; this runs in the phase before them).
   * @internal
   */
  async beforeApplicationShutdown(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#running?.catch(() => undefined);
  }
}
