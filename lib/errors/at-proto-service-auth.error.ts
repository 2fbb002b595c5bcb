import { AtProtoError } from './at-proto.error.js';

/**
 * Why a service-auth token was refused, stable across versions:
 * - `invalid-request`: the arguments cannot make a token (`aud` not a DID, `lxm` not an NSID,
 *   `exp` not whole epoch seconds); checked here, nothing was sent;
 * - `expiration-too-far`: `exp` more than an hour ahead (the PDS's maximum);
 * - `methodless-expiration-too-far`: no `lxm` and `exp` more than a minute ahead;
 * - `expiration-in-past`: `exp` already passed;
 * - `protected-method`: `lxm` is an account-management method the PDS never issues
 *   tokens for (`com.atproto.server.createAppPassword`, `…updateHandle`, …);
 * - `privileged-method`: `lxm` needs a privileged app password (`chat.bsky.*`,
 *   `com.atproto.server.createAccount`), and the session's is not;
 * - `scope-not-granted`: the OAuth session's scope does not cover `rpc:<lxm>?aud=<aud>`
 *   (`transition:generic` covers everything but `chat.bsky.*`);
 * - `refused`: any other refusal by the PDS (its error name is in `pdsError`).
 * @publicApi
 */
export type AtProtoServiceAuthRefusal =
  | 'invalid-request'
  | 'expiration-too-far'
  | 'methodless-expiration-too-far'
  | 'expiration-in-past'
  | 'protected-method'
  | 'privileged-method'
  | 'scope-not-granted'
  | 'refused';

/**
 * A service-auth token (`com.atproto.server.getServiceAuth`) that cannot be had for these
 * arguments: asking again with the same ones gets the same answer, so it is neither retried
 * nor cached. `reason` says which rule refused it. The message never contains a token.
 * An unreachable PDS is an `AtProtoUpstreamError` instead, and an ended OAuth session an
 * `AtProtoSessionUnavailableError`.
 * @publicApi
 */
export class AtProtoServiceAuthError extends AtProtoError {
  /** Which rule refused the token. */
  readonly reason: AtProtoServiceAuthRefusal;
  /** The XRPC error name the PDS answered with (`InvalidRequest`, `BadExpiration`, …), if any. */
  readonly pdsError: string | undefined;
  /** The HTTP status the PDS answered with; `undefined` when nothing was sent. */
  readonly status: number | undefined;

  constructor(
    reason: AtProtoServiceAuthRefusal,
    message: string,
    options?: { cause?: unknown; pdsError?: string; status?: number },
  ) {
    super('ERR_AT_PROTO_SERVICE_AUTH', message, options);
    this.reason = reason;
    this.pdsError = options?.pdsError;
    this.status = options?.status;
  }
}
