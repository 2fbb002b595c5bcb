import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The DID a step-up login must sign in (the account of the app session that asked for more
 * scopes), while the OAuth client completes it. The session store the client sees refuses
 * to read, write or delete any other DID's session in this scope (see
 * `fencedSessionStore`): the client's callback reads the signed-in account's previous
 * session to revoke it, then stores the new one; refusing both leaves that account's
 * session untouched, and the client then revokes the tokens it just obtained. So a step-up
 * signed in with another account replaces nothing, anywhere.
 * @internal
 */
export const loginExpectation = new AsyncLocalStorage<string>();

/**
 * What the session store throws for another DID's session during a step-up login.
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
  if (expected !== undefined && expected !== did) throw new LoginAccountMismatch();
}
