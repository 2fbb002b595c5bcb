import { AtProtoError } from './at-proto.error.js';

/**
 * A login, callback or logout request that cannot be accepted (bad input, forged or
 * replayed state, another browser's callback...). The routes answer it with a 400; its
 * message is safe to show to the user.
 * @publicApi
 */
export class AtProtoBadRequestError extends AtProtoError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AT_PROTO_BAD_REQUEST', message, options);
  }
}

/**
 * The user's OAuth session is gone (logged out, revoked, refresh refused, never existed):
 * the user must log in again. Answered with a 401.
 * @publicApi
 */
export class AtProtoSessionUnavailableError extends AtProtoError {
  /** The DID whose OAuth session has ended, when known. */
  readonly did: string | undefined;

  constructor(message: string, options?: { cause?: unknown; did?: string }) {
    super('ERR_AT_PROTO_SESSION_UNAVAILABLE', message, options);
    this.did = options?.did;
  }
}

/**
 * An AT Protocol server (authorization server, PDS, PLC directory) or the session lock
 * could not be reached or answered unexpectedly; trying again later may work. Answered
 * with a 502/503. The session is kept.
 * @publicApi
 */
export class AtProtoUpstreamError extends AtProtoError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AT_PROTO_UPSTREAM', message, options);
  }
}

/**
 * The module's own storage (database, Redis) or session lock cannot be used right now: a
 * login could not be started or completed, or a session could not be read or written.
 * Nothing was changed; trying again later may work. Answered with a 503.
 * @publicApi
 */
export class AtProtoUnavailableError extends AtProtoError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AT_PROTO_UNAVAILABLE', message, options);
  }
}
