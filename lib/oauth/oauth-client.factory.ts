import {
  NodeOAuthClient,
  TokenInvalidError,
  TokenRefreshError,
  TokenRevokedError,
} from '@atproto/oauth-client-node';
import type { AtProtoEvents, AtProtoSessionDeletedReason } from '../events/at-proto-events.js';
import type { AtProtoRequestLock } from '../lock/request-lock.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import type { AtProtoSessionStore, AtProtoStateStore } from '../storage/store.interface.js';
import { safeFetchWrap } from '@atproto-labs/fetch-node';
import { withScopedReads } from '../lock/lock-scope.js';
import type { RedisOAuthCaches } from '../storage/redis/redis-caches.js';
import { oauthPhase } from './oauth-phase.js';

/**
 * Builds the `NodeOAuthClient` from the resolved options, the stores and the lock, and
 * maps its session hooks to {@link AtProtoEvents}.
 * @internal
 */
export function createOAuthClient(
  options: ResolvedAtProtoOptions,
  stateStore: AtProtoStateStore,
  sessionStore: AtProtoSessionStore,
  lock: AtProtoRequestLock,
  events: AtProtoEvents,
  caches?: RedisOAuthCaches,
): NodeOAuthClient {
  return new NodeOAuthClient({
    ...caches,
    clientMetadata: options.clientMetadata,
    keyset: options.clientMode === 'confidential' ? [...options.signingKeys] : undefined,
    stateStore,
    sessionStore: withScopedReads(sessionStore),
    requestLock: (name, fn) => lock.run(name, fn),
    ...(options.handleResolver ? { handleResolver: options.handleResolver } : {}),
    ...(options.plcDirectoryUrl ? { plcDirectoryUrl: options.plcDirectoryUrl } : {}),
    allowHttp: options.allowHttpServers,
    fetch: clientFetch(options),
    onSessionUpdated: (did) => {
      events.emit({
        type:
          oauthPhase.getStore() === 'login' ? 'oauth-session-created' : 'oauth-session-refreshed',
        did,
      });
    },
    onSessionDeleted: (did, cause) => {
      // Before storing a new session (login) and when revoking (logout), the client reads
      // the current session; when there is none it reports a TokenRefreshError ("deleted by
      // another process") although nothing was deleted. Those are not events.
      if (oauthPhase.getStore() && cause instanceof TokenRefreshError) return;
      const { reason, message } = deletionReason(cause);
      events.emit({ type: 'oauth-session-deleted', did, reason, message });
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
 * The `fetch` the OAuth client uses. Login input is user-controlled (a handle, a DID, a
 * server URL) and a DID document names the PDS: without care, anyone could make this
 * backend request its internal network. So requests go through the AT Protocol's own SSRF
 * guard (`safeFetchWrap`): https only, no IP literals, no private or loopback addresses,
 * bounded response size — except with `allowHttpServers` (a local PDS in tests). Every
 * request also has a time limit (`httpTimeout`), so that a hung server cannot hold the
 * session lock (the client never aborts a refresh in flight on its own).
 * `globalThis.fetch` is looked up at call time, so instrumentation installed later applies.
 * @internal
 */
export function clientFetch(options: ResolvedAtProtoOptions): typeof globalThis.fetch {
  const open = options.allowHttpServers;
  return safeFetchWrap({
    fetch: callGlobalFetch,
    ssrfProtection: !open,
    allowHttp: open,
    allowIpHost: open,
    allowPrivateIps: open,
    allowCustomPort: true,
    // The client hands over Request objects; their redirect mode is theirs to choose.
    allowImplicitRedirect: true,
    timeout: options.httpTimeoutMs,
  }) as typeof globalThis.fetch;
}

/**
 * `globalThis.fetch`, looked up at call time. A `Request` input is passed on as URL + init:
 * re-wrapping a Request that has a body (`fetch(request, init)`, as the wrappers above do to
 * add a signal or a dispatcher) trips undici's "Request object that has already been used"
 * check under some runtimes (seen under Jest's VM modules), so its parts are copied instead.
 * @internal
 */
async function callGlobalFetch(
  input: string | URL | Request,
  init?: RequestInit,
): Promise<Response> {
  if (!(input instanceof Request)) return globalThis.fetch(input, init);
  const body =
    input.method === 'GET' || input.method === 'HEAD' ? undefined : await input.arrayBuffer();
  const signal = init?.signal ? AbortSignal.any([input.signal, init.signal]) : input.signal;
  return globalThis.fetch(input.url, {
    method: input.method,
    headers: input.headers,
    redirect: input.redirect,
    ...init,
    body,
    signal,
  });
}
