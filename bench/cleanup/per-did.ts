/**
 * The baseline of the cleanup benchmark: the module's cleanup runner with the per-DID work
 * of 0.1.0, built from the same providers as `AtProtoCleanupService` (target, revoker,
 * native extras, settings): after each batch, the OAuth session is read for each DID of the
 * batch (one statement each) and the revocations happen one at a time.
 * @internal
 */
import type { INestApplicationContext } from '@nestjs/common';
import {
  AT_PROTO_OPTIONS,
  AT_PROTO_SESSION_STORE,
  AtProtoAuthService,
  AtProtoNativeService,
  type CleanupResult,
} from 'nestjs-atproto-auth';
import { AT_PROTO_CLEANUP_TARGET } from '../../lib/at-proto.internal-constants.js';
import type { CleanupTarget } from '../../lib/cleanup/cleanup.interface.js';
import { CleanupRunner } from '../../lib/cleanup/cleanup.service.js';
import { AT_PROTO_NATIVE_STORE } from '../../lib/native/native.constants.js';
import type { NativeTokenStore } from '../../lib/native/native-store.interface.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import type { AtProtoSessionStore } from '../../lib/storage/store.interface.js';

/** A cleanup run as 0.1.0 did it, on the providers of `app`'s AtProtoModule. */
export function perDidCleanup(
  app: INestApplicationContext,
): (now: number) => Promise<CleanupResult> {
  const options = app.get<ResolvedAtProtoOptions>(AT_PROTO_OPTIONS);
  const target = app.get<CleanupTarget>(AT_PROTO_CLEANUP_TARGET);
  const sessionStore = app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
  const native = app.get(AtProtoNativeService);
  const nativeStore = app.get<NativeTokenStore>(AT_PROTO_NATIVE_STORE);
  const revokedGraceMs = options.cleanup.revokedGraceMs;
  const runner = new CleanupRunner(
    target,
    app.get(AtProtoAuthService),
    async (did) => (await sessionStore.get(did)) !== undefined,
    {
      batchSize: options.cleanup.batchSize,
      appSessionIdleTtlMs: options.appSession.idleTtlMs,
      revokedGraceMs,
      revokeUnusedOAuthSessions: options.cleanup.revokeUnusedOAuthSessions,
      apiKeyRevokedGraceMs: options.apiKeys.revokedGraceMs,
      revokeConcurrency: 1,
    },
    // No `oauthSessionsAmong`: the OAuth session is read DID by DID.
    {
      inUse: (did) => native.hasPendingLogin(did),
      nativeCodes: (now, batchSize) => nativeStore.deleteExpiredCodes(now, batchSize),
      nativeRefreshFamilies: (now, batchSize) =>
        nativeStore.deleteEndedFamilies({ now, revokedBefore: now - revokedGraceMs }, batchSize),
    },
  );
  return (now) => runner.run(now);
}
