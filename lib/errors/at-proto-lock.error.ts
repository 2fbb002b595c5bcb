import { AtProtoError } from './at-proto.error.js';

/**
 * Thrown when the session lock cannot be taken (Redis down or silent, or the lock held for
 * longer than the wait budget), or when it could expire before a token refresh completes
 * (the refresh is then not sent). Nothing was refreshed and the session is intact;
 * `@AtProtoSession()` answers 503.
 * @publicApi
 */
export class AtProtoLockError extends AtProtoError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AT_PROTO_LOCK', message, options);
  }
}
