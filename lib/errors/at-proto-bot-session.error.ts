import { AtProtoError } from './at-proto.error.js';

/**
 * Why a bot session could not be had or used, stable across versions:
 * - `invalid-request`: the arguments cannot log in (an empty identifier or password);
 *   nothing was sent;
 * - `invalid-credentials`: the PDS refused the identifier and password
 *   (`AuthenticationRequired`);
 * - `auth-factor-required`: the account asks for an email code on sign-in
 *   (`AuthFactorTokenRequired`): use an app password, which never does;
 * - `account-takedown`: the account was taken down (`AccountTakedown`);
 * - `account-deactivated`: the account is deactivated (`AccountDeactivated`);
 * - `expired`: the refresh JWT expired or was revoked, e.g. its app password was deleted
 *   (`ExpiredToken`);
 * - `invalid`: the PDS does not accept the refresh JWT (`InvalidToken`);
 * - `rate-limited`: the PDS limits logins (30 per 5 min and 300 per day per identifier)
 *   or refreshes (`RateLimitExceeded`); the stored session is kept;
 * - `not-logged-in`: no stored session for this DID: call `login()` first;
 * - `refused`: any other refusal by the PDS (its error name is in `pdsError`).
 *
 * `expired`, `invalid`, `account-takedown` and `account-deactivated` end the stored session
 * (a `bot-session-ended` event says so): the bot must log in again.
 * @publicApi
 */
export type AtProtoBotSessionErrorReason =
  | 'invalid-request'
  | 'invalid-credentials'
  | 'auth-factor-required'
  | 'account-takedown'
  | 'account-deactivated'
  | 'expired'
  | 'invalid'
  | 'rate-limited'
  | 'not-logged-in'
  | 'refused';

/**
 * A bot's app-password session that cannot be created, refreshed or used: `reason` says
 * why. The message never contains a password or token. An unreachable PDS is an
 * `AtProtoUpstreamError` instead (the session is kept).
 * @publicApi
 */
export class AtProtoBotSessionError extends AtProtoError {
  /** Why, stable across versions. */
  readonly reason: AtProtoBotSessionErrorReason;
  /** The bot's DID, when known. */
  readonly did: string | undefined;
  /** The XRPC error name the PDS answered with (`ExpiredToken`, …), if any. */
  readonly pdsError: string | undefined;
  /** The HTTP status the PDS answered with; `undefined` when nothing was sent. */
  readonly status: number | undefined;

  constructor(
    reason: AtProtoBotSessionErrorReason,
    message: string,
    options?: { cause?: unknown; did?: string; pdsError?: string; status?: number },
  ) {
    super('ERR_AT_PROTO_BOT_SESSION', message, options);
    this.reason = reason;
    this.did = options?.did;
    this.pdsError = options?.pdsError;
    this.status = options?.status;
  }

  /** Whether this error ended the stored session (the bot must log in again). */
  get ended(): boolean {
    return (
      this.reason === 'expired' ||
      this.reason === 'invalid' ||
      this.reason === 'account-takedown' ||
      this.reason === 'account-deactivated'
    );
  }
}
