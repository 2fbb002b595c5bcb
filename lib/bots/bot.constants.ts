/** Injection token of the bot-session store in use (TypeORM or memory). @internal */
export const AT_PROTO_BOT_SESSION_STORE = Symbol('AT_PROTO_BOT_SESSION_STORE');

/**
 * The lock name of a bot's refreshes and logins: its own, never the OAuth client's
 * (`@atproto-oauth-client-<did>`), which the module lets through without a lock for reads
 * that cannot refresh an OAuth session.
 * @internal
 */
export function botLockName(did: string): string {
  return `atproto-bot-${did}`;
}
