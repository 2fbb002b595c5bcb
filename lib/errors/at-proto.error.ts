/**
 * Stable machine-readable codes carried by every {@link AtProtoError}.
 * @publicApi
 */
export type AtProtoErrorCode =
  | 'ERR_AT_PROTO_CONFIG'
  | 'ERR_AT_PROTO_KEY_RING_UNAVAILABLE'
  | 'ERR_AT_PROTO_DECRYPT'
  | 'ERR_AT_PROTO_INVALID_KEY'
  | 'ERR_AT_PROTO_STORE'
  | 'ERR_AT_PROTO_LOCK'
  | 'ERR_AT_PROTO_GUARD_MISSING'
  | 'ERR_AT_PROTO_OPTIONAL_DEPENDENCY'
  | 'ERR_AT_PROTO_BAD_REQUEST'
  | 'ERR_AT_PROTO_SESSION_UNAVAILABLE'
  | 'ERR_AT_PROTO_UPSTREAM'
  | 'ERR_AT_PROTO_TOKEN'
  | 'ERR_AT_PROTO_SERVICE_AUTH'
  | 'ERR_AT_PROTO_SERVICE_JWT'
  | 'ERR_AT_PROTO_BOT_SESSION'
  | 'ERR_AT_PROTO_UNAVAILABLE';

/**
 * Base class of every error this library throws on purpose. `name` is the concrete
 * class name and `code` is stable across versions, so callers can branch on it.
 *
 * Messages say what went wrong and what to do; they never contain a token, key,
 * verifier or any other secret value.
 * @publicApi
 */
export class AtProtoError extends Error {
  /** Stable identifier of the failure, e.g. `ERR_AT_PROTO_DECRYPT`. */
  readonly code: AtProtoErrorCode;

  constructor(code: AtProtoErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
