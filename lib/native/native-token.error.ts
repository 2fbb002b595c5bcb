import { AtProtoError } from '../errors/at-proto.error.js';

/**
 * The RFC 6749 §5.2 error codes the token and revocation endpoints answer with.
 * @publicApi
 */
export type AtProtoTokenErrorCode = 'invalid_request' | 'invalid_grant' | 'unsupported_grant_type';

/**
 * A refused request to `POST <prefix>/token` or `POST <prefix>/revoke`: a missing or
 * repeated parameter (`invalid_request`), a code or refresh token that is invalid, expired,
 * already used or bound to something else (`invalid_grant`), or an unknown grant type
 * (`unsupported_grant_type`). Answered with a 400 whose JSON body is {@link toJSON}'s, and
 * `Cache-Control: no-store`. The description never contains a token, code or verifier.
 * @publicApi
 */
export class AtProtoTokenError extends AtProtoError {
  /** The OAuth error code (RFC 6749 §5.2). */
  readonly oauthError: AtProtoTokenErrorCode;
  /** The HTTP status to answer with. */
  readonly status = 400;

  constructor(
    oauthError: AtProtoTokenErrorCode,
    description: string,
    options?: { cause?: unknown },
  ) {
    super('ERR_AT_PROTO_TOKEN', description, options);
    this.oauthError = oauthError;
  }

  /** The response body RFC 6749 §5.2 prescribes. */
  toJSON(): { error: AtProtoTokenErrorCode; error_description: string } {
    return { error: this.oauthError, error_description: this.message };
  }
}
