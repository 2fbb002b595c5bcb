import {
  NodeOAuthClient,
  TokenInvalidError,
  TokenRefreshError,
  TokenRevokedError,
} from '@atproto/oauth-client-node';
import type { AtProtoEvents, AtProtoSessionDeletedReason } from '../events/at-proto-events.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import type { AtProtoSessionStore, AtProtoStateStore } from '../storage/store.interface.js';
import { sessionLockName } from '../lock/lock-scope.js';
import type { RedisOAuthCaches } from '../storage/redis/redis-caches.js';
import { assertExpectedLock } from './login-expectation.js';
import { oauthPhase } from './oauth-phase.js';
import { requestOutcome } from './request-outcome.js';
import {
  createOutboundFetch,
  type OutboundFetchPolicy,
  parsePrivateHost,
} from './outbound-fetch.js';
import {
  assertRefreshMayStart,
  fencedSessionStore,
  heldLock,
  outsideLocks,
  type SessionLocks,
} from './session-locks.js';

/**
 * Builds the `NodeOAuthClient` from the resolved options, the stores and the lock, and
 * maps its session hooks to {@link AtProtoEvents}.
 * @internal
 */
export function createOAuthClient(
  options: ResolvedAtProtoOptions,
  stateStore: AtProtoStateStore,
  sessionStore: AtProtoSessionStore,
  locks: SessionLocks,
  events: AtProtoEvents,
  caches?: RedisOAuthCaches,
): NodeOAuthClient {
  // A write or delete refused by the fence changed nothing: no "refreshed"/"deleted" event.
  const fencedHere = (did: string) => heldLock(sessionLockName(did))?.fenced.has(did) ?? false;
  return new NodeOAuthClient({
    ...caches,
    clientMetadata: options.clientMetadata,
    keyset: options.clientMode === 'confidential' ? [...options.signingKeys] : undefined,
    stateStore,
    sessionStore: fencedSessionStore(sessionStore, locks, (did, operation) =>
      outsideLocks(() => events.emit({ type: 'oauth-session-write-fenced', did, operation })),
    ),
    requestLock: (name, fn) => {
      // Before the client's shared lookup of a session: a step-up signed in with another
      // account must not even join a read of that account's session in flight (the client
      // would then revoke it). See login-expectation.ts.
      assertExpectedLock(name);
      return locks.run(name, fn);
    },
    ...(options.handleResolver ? { handleResolver: options.handleResolver } : {}),
    ...(options.plcDirectoryUrl ? { plcDirectoryUrl: options.plcDirectoryUrl } : {}),
    allowHttp: options.allowHttpServers,
    fetch: clientFetch(options, async (request) => {
      if (request.method !== 'POST') return;
      assertRefreshMayStart(request, await request.clone().text(), options.httpTimeoutMs);
    }),
    onSessionUpdated: (did) => {
      if (fencedHere(did)) return;
      const type =
        oauthPhase.getStore() === 'login' ? 'oauth-session-created' : 'oauth-session-refreshed';
      // Outside the lock's async context: a listener's async work outlives the lock.
      outsideLocks(() => events.emit({ type, did }));
    },
    onSessionDeleted: (did, cause) => {
      // Before storing a new session (login) and when revoking (logout), the client reads
      // the current session; when there is none it reports a TokenRefreshError ("deleted by
      // another process") although nothing was deleted. Those are not events.
      if (oauthPhase.getStore() && cause instanceof TokenRefreshError) return;
      if (fencedHere(did)) return;
      requestOutcome.getStore()?.deleted.add(did);
      const { reason, message } = deletionReason(cause);
      outsideLocks(() => events.emit({ type: 'oauth-session-deleted', did, reason, message }));
    },
  });
}

function deletionReason(cause: unknown): { reason: AtProtoSessionDeletedReason; message?: string } {
  const phase = oauthPhase.getStore();
  const message = cause instanceof Error ? cause.message : undefined;
  if (cause instanceof TokenRevokedError) {
    return {
      reason: phase === 'login' ? 'replaced' : phase === 'logout' ? 'logout' : 'revoked',
      message,
    };
  }
  if (cause instanceof TokenRefreshError) return { reason: 'refresh-failed', message };
  if (cause instanceof TokenInvalidError) return { reason: 'invalid', message };
  // The client does not export this class; its constructor name is stable (see
  // @atproto/oauth-client errors/auth-method-unsatisfiable-error).
  if ((cause as object | undefined)?.constructor?.name === 'AuthMethodUnsatisfiableError') {
    return { reason: 'signing-key-removed', message };
  }
  return { reason: 'error', message };
}

/**
 * The `fetch` the OAuth client uses, built from the options: see {@link createOutboundFetch}.
 * @internal
 */
export function clientFetch(
  options: Pick<ResolvedAtProtoOptions, 'allowHttpServers' | 'privateHosts' | 'httpTimeoutMs'>,
  beforeSend?: OutboundFetchPolicy['beforeSend'],
): typeof globalThis.fetch {
  return createOutboundFetch({
    allowHttp: options.allowHttpServers,
    privateHosts: options.privateHosts.flatMap((entry) => parsePrivateHost(entry) ?? []),
    timeoutMs: options.httpTimeoutMs,
    beforeSend,
  });
}
