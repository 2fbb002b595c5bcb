import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * What happened to OAuth sessions while one HTTP request was handled, as far as the
 * request's own work is concerned. The OAuth client hides some outcomes from the handler:
 * when a PDS answers 401 and the session's retry cannot refresh, `fetchHandler()` returns
 * that 401 (an `Agent` turns it into an `XRPCError`) after having deleted a session whose
 * refresh was refused, or having failed for a transient reason. The module records both
 * here, so that the 401 can be answered for what it is.
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
