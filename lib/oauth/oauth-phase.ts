import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * What the module is doing when the OAuth client calls its session hooks: the hooks only
 * get `(did, session)` / `(did, cause)`, so the module marks its own login and logout
 * calls to tell "created" from "refreshed" and "replaced"/"logout" from "revoked".
 * @internal
 */
export const oauthPhase = new AsyncLocalStorage<'login' | 'logout'>();
