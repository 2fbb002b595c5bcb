import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * What happened to OAuth sessions during one `fetchHandler()` call of a session the module
 * restored (see `AtProtoAuthService.restore`). The OAuth client hides some outcomes from the
 * caller: when a PDS answers 401 and the session's retry cannot refresh, `fetchHandler()`
 * returns that 401 (an `Agent` turns it into an `XRPCError`) after having deleted a session
 * whose refresh was refused, or having failed for a transient reason. The module records
 * both here, so that the call throws what happened instead of the bare 401.
 * @internal
 */
export interface RequestOutcome {
  /** DIDs whose OAuth session the client deleted during the request. */
  readonly deleted: Set<string>;
  /** Errors of refreshes that failed during the request, by DID. */
  readonly refreshFailures: Map<string, unknown>;
}

/** @internal */
export const requestOutcome = new AsyncLocalStorage<RequestOutcome>();
