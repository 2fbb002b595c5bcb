import { AsyncLocalStorage } from 'node:async_hooks';
import { sessionLockName } from '../lock/lock-scope.js';

/**
 * The DID a step-up login must sign in (the account of the app session that asked for more
 * scopes), while the OAuth client completes it. The OAuth client's lock and the session
 * store it sees refuse any other DID's session in this scope (see `createOAuthClient` and
 * `fencedSessionStore`): the client's callback reads the signed-in account's previous
 * session to revoke it, then stores the new one; refusing both leaves that account's
 * session untouched, and the client then revokes the tokens it just obtained. So a step-up
 * signed in with another account replaces nothing, anywhere.
 *
 * `active` is cleared when the callback returns: work the callback started that goes on
 * afterwards (an event listener's timer, say) is not bound by it. Event listeners also run
 * outside it (`outsideLocks`).
 * @internal
 */
export const loginExpectation = new AsyncLocalStorage<{ did: string; active: boolean }>();

/** Runs a login callback that must sign in `did`. @internal */
export async function expectingAccount<T>(did: string, fn: () => Promise<T>): Promise<T> {
  const expectation = { did, active: true };
  try {
    return await loginExpectation.run(expectation, fn);
  } finally {
    expectation.active = false;
  }
}

/**
 * What the session store and the client's lock throw for another DID's session during a
 * step-up login.
 * @internal
 */
export class LoginAccountMismatch extends Error {
  constructor() {
    super('A step-up login signed in with another account than the one that asked.');
    this.name = 'LoginAccountMismatch';
  }
}

/** Throws {@link LoginAccountMismatch} when a step-up login expects another DID. @internal */
export function assertExpectedAccount(did: string): void {
  const expected = loginExpectation.getStore();
  if (expected?.active && expected.did !== did) throw new LoginAccountMismatch();
}

/** The same for a lock the OAuth client takes (`@atproto-oauth-client-<did>`). @internal */
export function assertExpectedLock(name: string): void {
  const prefix = sessionLockName('');
  if (name.startsWith(prefix)) assertExpectedAccount(name.slice(prefix.length));
}
