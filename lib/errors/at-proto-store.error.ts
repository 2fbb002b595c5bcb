import { AtProtoError } from './at-proto.error.js';

/**
 * Thrown by a store when its input is invalid (for example a malformed DID) or when a
 * write still fails after its transient-failure retries.
 * @publicApi
 */
export class AtProtoStoreError extends AtProtoError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AT_PROTO_STORE', message, options);
  }
}
