import { AsyncLocalStorage } from 'node:async_hooks';
import type { NodeSavedSession } from '@atproto/oauth-client-node';
import type { AtProtoSessionStore } from '../storage/store.interface.js';

/**
 * Marks a call of the OAuth client that cannot refresh tokens, so that the request lock may
 * skip the distributed (Redis) lock for it.
 *
 * Why this is safe: the module sets the mark only around reads with `refresh = false` —
 * `client.restore(did, false)` and `session.getTokenSet(false)` — made after it found an
 * access token valid for at least another minute. With `refresh = false` the client's
 * session getter returns the stored session and never calls the token endpoint, whatever it
 * finds. So every refresh — automatic, forced (`restore(did, true)`), or the session's own
 * retry after a 401 (`getTokenSet(true)`, never marked) — still takes the distributed lock,
 * and so does every deletion (`revoke`, `signOut`), so that no deletion interleaves with a
 * refresh that would store the rotated tokens again. The OAuth client takes the lock on
 * every read and cannot say why; this mark is how the module tells it.
 * @internal
 */
export const noRefreshScope = new AsyncLocalStorage<NoRefreshScope>();

/** What the no-refresh scope carries. @internal */
export interface NoRefreshScope {
  /** The lock name the mark applies to. */
  readonly lockName: string;
  /** The DID being restored. */
  readonly did: string;
  /**
   * The session the module just read from the store to check its freshness: the client's
   * own read inside the scope returns it instead of a second identical database read. This
   * is outside any lock (the scope takes none), so the rule "inside the lock, read the
   * database" is not at stake; and with `refresh = false` the value is only handed out.
   */
  readonly session: NodeSavedSession;
}

/**
 * Wraps the session store handed to the OAuth client: inside a no-refresh scope, a read of
 * the scope's DID returns the session the module has just read. Everything else goes to the
 * store.
 * @internal
 */
export function withScopedReads(store: AtProtoSessionStore): AtProtoSessionStore {
  return {
    get: async (did) => {
      const scope = noRefreshScope.getStore();
      return scope && scope.did === did ? scope.session : store.get(did);
    },
    set: (did, value) => store.set(did, value),
    del: (did) => store.del(did),
  };
}

/** The lock name the OAuth client uses for a DID. @internal */
export function sessionLockName(did: string): string {
  return `@atproto-oauth-client-${did}`;
}
