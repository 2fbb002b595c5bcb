import { AtProtoError } from './at-proto.error.js';

/**
 * Why a stored value could not be decrypted.
 * - `unknown-key`: the envelope names a key id that is not in the key ring.
 * - `authentication-failed`: wrong key, tampered ciphertext, or a value copied from another column.
 * - `malformed`: not an envelope of a known version (truncated, or not encrypted at all).
 * @publicApi
 */
export type AtProtoDecryptionFailure = 'unknown-key' | 'authentication-failed' | 'malformed';

/**
 * Thrown when an encrypted column cannot be decrypted. It names the key id and the
 * column (`table.column`), never the value. A stored value is never returned as garbage
 * or as a silent `null`.
 * @publicApi
 */
export class AtProtoDecryptionError extends AtProtoError {
  constructor(
    /** Why decryption failed. */
    readonly reason: AtProtoDecryptionFailure,
    /** `table.column` the value was read from (the associated data it is bound to). */
    readonly column: string,
    /** Key id written in the envelope, when it could be read. */
    readonly keyId: string | undefined,
  ) {
    super('ERR_AT_PROTO_DECRYPT', AtProtoDecryptionError.describe(reason, column, keyId));
  }

  private static describe(
    reason: AtProtoDecryptionFailure,
    column: string,
    keyId: string | undefined,
  ): string {
    switch (reason) {
      case 'unknown-key':
        return (
          `Cannot decrypt ${column}: it was encrypted with key id "${keyId}", which is not in the ` +
          `encryption key ring. Add that key back to encryption.keys (keep retired keys until ` +
          `reencrypt() has rewritten every value).`
        );
      case 'authentication-failed':
        return (
          `Cannot decrypt ${column} with key id "${keyId}": authentication failed. The key with ` +
          `that id is not the one the value was written with, or the stored value was altered or ` +
          `copied from another column.`
        );
      case 'malformed':
        return (
          `Cannot decrypt ${column}: the stored value is not a valid encryption envelope ` +
          `(truncated, corrupted, or written without encryption).`
        );
    }
  }
}
