import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Marks a call of the OAuth client that cannot refresh tokens, so that the request lock may
 * skip the distributed (Redis) lock for it. The value is the lock name the mark applies to.
 *
 * Why this is safe: the module sets the mark only around `client.restore(did, false)`,
 * after reading the stored session and finding an access token valid for at least another
 * minute. With `refresh = false` the client's session getter returns the stored session and
 * never calls the token endpoint, whatever it finds. So every refresh — automatic, forced
 * (`restore(did, true)`), or the session's own retry after a 401 (which runs later, outside
 * this scope) — still takes the distributed lock. The OAuth client takes the lock on every
 * restore and cannot say why; this mark is how the module tells it.
 * @internal
 */
export const noRefreshScope = new AsyncLocalStorage<string>();

/** The lock name the OAuth client uses for a DID. @internal */
export function sessionLockName(did: string): string {
  return `@atproto-oauth-client-${did}`;
}
