import { hash, randomInt } from 'node:crypto';
import { crc32 } from 'node:zlib';

/**
 * The format of an API key:
 *
 * ```text
 * <prefix><32 base62 characters from the CSPRNG><6 base62 characters: CRC32 of all before>
 * ```
 *
 * - The prefix (`apiKeys.prefix`, `atp_` by default) lets secret scanners match a leaked key
 *   (`atp_[0-9A-Za-z]{38}`) and the guard tell a key from a JWT.
 * - 32 characters of base62 hold log2(62) × 32 ≈ 190.5 bits, each drawn uniformly with
 *   `crypto.randomInt` (the OS CSPRNG, rejection-sampled, so no modulo bias).
 * - The checksum is CRC32 (IEEE) over the prefix and the random part, written as 6 base62
 *   digits, most significant first, zero-padded (62^6 > 2^32). It catches every typo of one
 *   character or two swapped neighbours (CRC32 detects every error burst of up to 32 bits),
 *   so a mistyped or truncated key is refused without a database read.
 *
 * Base62 (not base64url) so that a double click selects the whole key and no URL or shell
 * escaping can change it.
 * @internal
 */
export const API_KEY_RANDOM_LENGTH = 32;
/** Length of the checksum at the end of a key. @internal */
export const API_KEY_CHECKSUM_LENGTH = 6;
/** Random characters shown in the display prefix, after the configured prefix. @internal */
export const API_KEY_DISPLAY_RANDOM_LENGTH = 8;

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const BODY = new RegExp(`^[0-9A-Za-z]{${API_KEY_RANDOM_LENGTH + API_KEY_CHECKSUM_LENGTH}}$`);

/**
 * A new key, its id (the SHA-256 it is stored under) and its display prefix.
 * @internal
 */
export function generateApiKey(prefix: string): {
  key: string;
  id: string;
  displayPrefix: string;
} {
  let random = '';
  for (let i = 0; i < API_KEY_RANDOM_LENGTH; i++) random += BASE62[randomInt(62)];
  const body = `${prefix}${random}`;
  const key = `${body}${checksumOf(body)}`;
  return {
    key,
    id: apiKeyIdOf(key),
    displayPrefix: `${prefix}${random.slice(0, API_KEY_DISPLAY_RANDOM_LENGTH)}`,
  };
}

/**
 * Whether `value` has the form of a key made with `prefix` and a checksum that matches:
 * everything the guard can check without the database. Never throws.
 * @internal
 */
export function isWellFormedApiKey(value: unknown, prefix: string): value is string {
  if (typeof value !== 'string') return false;
  // The length first: nothing else is looked at for a value of the wrong size.
  if (value.length !== prefix.length + API_KEY_RANDOM_LENGTH + API_KEY_CHECKSUM_LENGTH) {
    return false;
  }
  if (!value.startsWith(prefix) || !BODY.test(value.slice(prefix.length))) return false;
  const split = value.length - API_KEY_CHECKSUM_LENGTH;
  // Not a secret comparison: the checksum is a function of the public part of the key.
  return checksumOf(value.slice(0, split)) === value.slice(split);
}

/**
 * The id of a key: the SHA-256 of the whole key, lowercase hex. It is what the database
 * stores and what `list` shows, never the key.
 *
 * Why a fast hash suffices (no bcrypt/scrypt, no pepper): slow hashes protect guessable
 * secrets such as passwords. A key holds 190 random bits; its display prefix shows 8 of its
 * characters (about 48 bits), leaving about 143 bits unknown to whoever reads a dump, far
 * beyond any brute force (2^128 is the usual bar). One SHA-256 also keeps the lookup a single
 * primary-key read per request, as for app-session tokens.
 * @internal
 */
export function apiKeyIdOf(key: string): string {
  // One-shot `crypto.hash`: about half the cost of createHash().update().digest() on a
  // short input, and the guard hashes every API key it sees.
  return hash('sha256', key, 'hex');
}

/**
 * CRC32 of `body` in 6 base62 digits. `zlib.crc32` is Node's own (Node 22.2 and later; the
 * package requires ^22.13 or >= 24.11), so no CRC code of ours. The base62 digits are a
 * plain positional encoding of a 32-bit number, too small for a library.
 */
function checksumOf(body: string): string {
  let n = crc32(body);
  let out = '';
  for (let i = 0; i < API_KEY_CHECKSUM_LENGTH; i++) {
    out = BASE62[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}
