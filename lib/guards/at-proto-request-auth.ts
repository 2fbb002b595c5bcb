import type { OAuthSession } from '@atproto/oauth-client-node';
import { AT_PROTO_REQUEST_KEY } from '../at-proto.constants.js';
import type { AtProtoCredentialKind } from '../credentials/credentials.js';

/**
 * What `AtProtoAuthGuard` attaches to an authenticated request (as `req.atproto`).
 * @publicApi
 */
export interface AtProtoRequestAuth {
  /** The signed-in user's DID. */
  readonly did: string;
  /** How the request proved it: the session cookie, a bearer access token, or an API key. */
  readonly credential: AtProtoCredentialKind;
  /**
   * Id of the app session (device) the request came with: the browser's, or the native
   * app's whose access token it carries. Undefined for an API key.
   */
  readonly appSessionId: string | undefined;
  /** Id of the API key the request came with, for `credential: 'api-key'`. */
  readonly apiKeyId?: string;
  /**
   * Restores the user's OAuth session (refreshing it if stale). Memoized per request;
   * nothing is restored until something calls it.
   */
  restore(): Promise<OAuthSession>;
}

/** @internal Marks a request the guard has seen, authenticated or not. */
export const AT_PROTO_GUARD_SEEN = Symbol.for('nestjs-atproto-auth.guard-seen');

/**
 * What the guard attached to a request, if it authenticated one.
 * @internal
 */
export function getRequestAuth(req: unknown): AtProtoRequestAuth | undefined {
  return (req as Record<string, unknown> | undefined)?.[AT_PROTO_REQUEST_KEY] as
    AtProtoRequestAuth | undefined;
}
