import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createSecretKey,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import { AtProtoDecryptionError } from '../errors/at-proto-decryption.error.js';

/**
 * Options of a {@link KeyRing}.
 * @publicApi
 */
export interface KeyRingOptions {
  /**
   * Id of the key that encrypts every new value. It must be one of `keys`. It is named
   * explicitly, never implied by order: JavaScript does not keep insertion order for
   * object keys that look like integers.
   */
  activeKeyId: string;
  /**
   * Every key that may still be needed to decrypt, by id: base64 of exactly 32 random
   * bytes (`openssl rand -base64 32`). Key ids match `[A-Za-z0-9_-]{1,64}`; a date such as
   * `2026-11` works well. Keep a retired key here until `reencrypt()` has rewritten every
   * value that still uses it.
   */
  keys: Readonly<Record<string, string>>;
}

/** @internal Version tag of the envelope format documented in docs/encryption.md. */
export const ENVELOPE_VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const KEY_ID = /^[A-Za-z0-9_-]{1,64}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/**
 * Fewest distinct byte values a key may have. 32 random bytes have 30.1 on average, and
 * fewer than 16 with probability about 2^-55, so only a constant, a repeated pattern or
 * another non-random key fails.
 */
const MIN_DISTINCT_BYTES = 16;
/**
 * Longest key id printed as is in a configuration error. Every encoding of a 32-byte key is
 * longer (43 characters in base64url, 44 in base64, 64 in hex), so a key pasted where an id
 * belongs is never printed, even when it is a valid id.
 */
const MAX_SHOWN_ID = 40;

/**
 * A function that renders a key id for a configuration error without ever echoing key
 * material: a short, valid id that is not one of the (base64) key values is printed quoted;
 * any other (a key pasted in place of an id, or an id that is not valid) as its length and the
 * first 6 hex digits of its SHA-256, enough to tell which entry is meant.
 */
function idPrinter(materials: readonly unknown[]): (id: string) => string {
  // The key values as bytes, so that an id holding one of them in another encoding (base64
  // for base64url, hex) is recognised too; keyed by digest so that no copy is kept.
  const digest = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
  const values = new Set(
    materials
      .filter((m): m is string => typeof m === 'string' && m.trim() !== '' && BASE64.test(m.trim()))
      .map((m) => digest(Buffer.from(m, 'base64'))),
  );
  const isKeyValue = (id: string) =>
    // Buffer's base64 decoder reads the base64url alphabet as well.
    values.has(digest(Buffer.from(id, 'base64'))) ||
    (/^(?:[0-9a-f]{2})+$/i.test(id) && values.has(digest(Buffer.from(id, 'hex'))));
  return (id) => {
    if (KEY_ID.test(id) && id.length <= MAX_SHOWN_ID && !isKeyValue(id)) return `"${id}"`;
    const prefix = createHash('sha256').update(id, 'utf8').digest('hex').slice(0, 6);
    return `(an id of ${id.length} characters, SHA-256 ${prefix}…)`;
  };
}

/**
 * The associated data a ciphertext is bound to. Binding the envelope version, key id and
 * context (`table.column`) means a value copied into another column, or relabelled with
 * another key id, fails authentication instead of decrypting.
 * @internal
 */
export function associatedData(keyId: string, context: string): Buffer {
  return Buffer.from(`nestjs-atproto-auth:${ENVELOPE_VERSION}:${keyId}:${context}`, 'utf8');
}

/**
 * A set of AES-256-GCM keys with ids, one of them active.
 *
 * Every value is encrypted under the active key with a fresh random 96-bit IV and written
 * as the versioned envelope `v1.<keyId>.<iv>.<ciphertext‖tag>` (base64url parts), so that it
 * can be decrypted after the active key changes. See docs/encryption.md for the format, the
 * per-key encryption bound of random IVs, and rotation.
 *
 * @example
 * const ring = new KeyRing({ activeKeyId: '2026-11', keys: { '2026-11': process.env.ENC_KEY! } });
 * const stored = ring.encrypt('secret', 'my_table.my_column');
 * ring.decrypt(stored, 'my_table.my_column'); // 'secret'
 * @publicApi
 */
export class KeyRing {
  /** Id of the key that encrypts new values. */
  readonly activeKeyId: string;
  readonly #keys: ReadonlyMap<string, KeyObject>;
  readonly #activeKey: KeyObject;

  /**
   * @throws AtProtoConfigError listing every problem: an empty ring, a key that is not
   * base64 of 32 bytes, a key that is not random (fewer than 16 distinct byte values), the
   * same key under two ids, an invalid or duplicate key id, an active id that is not in the
   * ring. Messages never contain key material: an id that could be a key is shown by its
   * length and a SHA-256 prefix.
   */
  constructor(options: KeyRingOptions) {
    const problems = KeyRing.validate(options);
    if (problems.length > 0) throw new AtProtoConfigError(problems, 'encryption key ring');
    const keys = new Map<string, KeyObject>();
    for (const [id, material] of Object.entries(options.keys)) {
      keys.set(id, createSecretKey(Buffer.from(material, 'base64')));
    }
    this.#keys = keys;
    this.activeKeyId = options.activeKeyId;
    this.#activeKey = keys.get(options.activeKeyId) as KeyObject;
  }

  /**
   * Every problem with `options`, as messages that say how to fix them (empty when valid).
   * Used by the module's option validation so that all problems are reported at once.
   */
  static validate(options: KeyRingOptions | undefined): string[] {
    const problems: string[] = [];
    if (!options || typeof options !== 'object') {
      return [
        'encryption is required: { activeKeyId, keys: { [id]: base64 of 32 random bytes } }.',
      ];
    }
    const { activeKeyId, keys } = options;
    const hasKeys = !!keys && typeof keys === 'object';
    const show = idPrinter(hasKeys ? Object.values(keys) : []);
    if (!hasKeys || Object.keys(keys).length === 0) {
      problems.push(
        'encryption.keys is empty: add at least one key, e.g. { "2026-11": "<output of openssl rand -base64 32>" }.',
      );
    } else {
      const seenIds = new Map<string, string>();
      // Keyed by a digest of the key bytes, so that the map holds no copy of a key.
      const seenKeys = new Map<string, string>();
      for (const [id, material] of Object.entries(keys)) {
        if (!KEY_ID.test(id)) {
          problems.push(
            `encryption.keys has an invalid key id ${show(id)}: use 1 to 64 characters from A-Z a-z 0-9 _ -.`,
          );
        }
        const normalized = id.toLowerCase();
        const earlier = seenIds.get(normalized);
        if (earlier !== undefined) {
          problems.push(
            `encryption.keys has duplicate key id ${show(id)} (same as ${show(earlier)}; ids are ` +
              'compared case-insensitively): give each key its own id.',
          );
        } else {
          seenIds.set(normalized, id);
        }
        if (
          typeof material !== 'string' ||
          !BASE64.test(material.trim()) ||
          material.trim() === ''
        ) {
          problems.push(
            `encryption.keys[${show(id)}] is not base64: generate a key with \`openssl rand -base64 32\`.`,
          );
          continue;
        }
        const bytes = Buffer.from(material, 'base64');
        if (bytes.length !== KEY_BYTES) {
          problems.push(
            `encryption.keys[${show(id)}] decodes to ${bytes.length} bytes; ` +
              `AES-256 needs exactly 32: generate a key with \`openssl rand -base64 32\`.`,
          );
          continue;
        }
        const distinct = new Set(bytes).size;
        if (distinct < MIN_DISTINCT_BYTES) {
          problems.push(
            `encryption.keys[${show(id)}] has only ${distinct} distinct byte value${distinct === 1 ? '' : 's'} ` +
              `in 32 (a random key has about 30), so it is not random: generate a key with ` +
              '`openssl rand -base64 32`.',
          );
        }
        const digest = createHash('sha256').update(bytes).digest('hex');
        const owner = seenKeys.get(digest);
        if (owner !== undefined) {
          problems.push(
            `encryption.keys[${show(owner)}] and encryption.keys[${show(id)}] hold the same key: ` +
              'give each id its own key (a rotation adds a new random key under a new id).',
          );
        } else {
          seenKeys.set(digest, id);
        }
      }
    }
    if (typeof activeKeyId !== 'string' || activeKeyId === '') {
      problems.push(
        'encryption.activeKeyId is required: name the key in encryption.keys that encrypts new values.',
      );
    } else if (hasKeys && !Object.hasOwn(keys, activeKeyId)) {
      problems.push(
        `encryption.activeKeyId ${show(activeKeyId)} is not a key id in encryption.keys ` +
          `(known: ${Object.keys(keys).map(show).join(', ') || 'none'}).`,
      );
    }
    return problems;
  }

  /** Ids of every key in the ring. */
  get keyIds(): string[] {
    return [...this.#keys.keys()];
  }

  /**
   * Encrypts `plaintext` under the active key, bound to `context` (for a column:
   * `table.column`). Two calls with the same input give different envelopes.
   */
  encrypt(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#activeKey, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(associatedData(this.activeKeyId, context));
    const body = Buffer.concat([
      cipher.update(plaintext, 'utf8'),
      cipher.final(),
      cipher.getAuthTag(),
    ]);
    return `${ENVELOPE_VERSION}.${this.activeKeyId}.${iv.toString('base64url')}.${body.toString('base64url')}`;
  }

  /**
   * Decrypts an envelope written by {@link KeyRing.encrypt} with the same `context`.
   * @throws AtProtoDecryptionError naming the key id and context, never the value.
   */
  decrypt(envelope: string, context: string): string {
    const parsed = parseEnvelope(envelope);
    if (!parsed) throw new AtProtoDecryptionError('malformed', context, undefined);
    const key = this.#keys.get(parsed.keyId);
    if (!key) throw new AtProtoDecryptionError('unknown-key', context, parsed.keyId);
    const { iv, body } = parsed;
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(associatedData(parsed.keyId, context));
      decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
      const plain = Buffer.concat([
        decipher.update(body.subarray(0, body.length - TAG_BYTES)),
        decipher.final(),
      ]);
      return plain.toString('utf8');
    } catch {
      throw new AtProtoDecryptionError('authentication-failed', context, parsed.keyId);
    }
  }

  /** The key id written in an envelope, or `undefined` if it is not an envelope. */
  static keyIdOf(envelope: string): string | undefined {
    return parseEnvelope(envelope)?.keyId;
  }

  /** Whether a stored envelope was written under another key than the active one. */
  needsReencryption(envelope: string): boolean {
    return KeyRing.keyIdOf(envelope) !== this.activeKeyId;
  }
}

function parseEnvelope(envelope: string): { keyId: string; iv: Buffer; body: Buffer } | undefined {
  if (typeof envelope !== 'string') return undefined;
  const parts = envelope.split('.');
  if (parts.length !== 4) return undefined;
  const [version, keyId, ivPart, bodyPart] = parts as [string, string, string, string];
  if (version !== ENVELOPE_VERSION || !KEY_ID.test(keyId)) return undefined;
  if (!BASE64URL.test(ivPart) || !BASE64URL.test(bodyPart)) return undefined;
  const iv = Buffer.from(ivPart, 'base64url');
  const body = Buffer.from(bodyPart, 'base64url');
  if (iv.length !== IV_BYTES || body.length < TAG_BYTES) return undefined;
  return { keyId, iv, body };
}
