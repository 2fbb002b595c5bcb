import type { ValueTransformer } from 'typeorm';
import { AtProtoKeyRingUnavailableError } from '../errors/at-proto-key-ring-unavailable.error.js';
import { AtProtoStoreError } from '../errors/at-proto-store.error.js';
import { getInstalledKeyRing } from './key-ring.registry.js';

/**
 * A TypeORM `ValueTransformer` that stores a string column as an AES-256-GCM envelope
 * under the installed key ring. The ciphertext is bound to `table.column`, so a value
 * copied into another column fails to decrypt. `null` stays `null`.
 *
 * @example
 * \@Column({ type: 'text', transformer: encryptedColumn('my_table', 'secret') })
 * secret!: string;
 * @publicApi
 */
export function encryptedColumn(table: string, column: string): ValueTransformer {
  const context = `${table}.${column}`;
  const ring = () => {
    const keyRing = getInstalledKeyRing();
    if (!keyRing) throw new AtProtoKeyRingUnavailableError(context);
    return keyRing;
  };
  return {
    to: (value: unknown) => {
      if (value === null || value === undefined) return value;
      if (typeof value !== 'string') {
        // FindOperators and the like never target secret columns; refuse rather than guess.
        throw new AtProtoStoreError(`encryptedColumn(${context}) only stores strings.`);
      }
      return ring().encrypt(value, context);
    },
    from: (value: unknown) => {
      if (value === null || value === undefined) return value;
      return ring().decrypt(String(value), context);
    },
  };
}
