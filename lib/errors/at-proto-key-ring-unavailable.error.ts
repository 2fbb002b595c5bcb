import { AtProtoError } from './at-proto.error.js';

/**
 * Thrown when an encrypted column is read or written before any key ring was
 * installed (the module has not booted, or a script uses the entities without calling
 * `installKeyRing()`).
 * @publicApi
 */
export class AtProtoKeyRingUnavailableError extends AtProtoError {
  constructor(column: string) {
    super(
      'ERR_AT_PROTO_KEY_RING_UNAVAILABLE',
      `Cannot encrypt or decrypt ${column}: no encryption key ring is installed. Import ` +
        `AtProtoModule (it installs the key ring from its "encryption" option at boot) or, in a ` +
        `script outside Nest, call installKeyRing(new KeyRing({ activeKeyId, keys })) first.`,
    );
  }
}
