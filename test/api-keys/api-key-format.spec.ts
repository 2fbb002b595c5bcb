/**
 * The key format, as secret scanners and the guard see it:
 * `<prefix><32 base62 characters from the CSPRNG><6 base62 characters of CRC32>`, the CRC32
 * taken over everything before it. A typo is refused by the checksum alone.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import {
  API_KEY_CHECKSUM_LENGTH,
  API_KEY_RANDOM_LENGTH,
  apiKeyIdOf,
  generateApiKey,
  isWellFormedApiKey,
} from '../../lib/api-keys/api-key-format.js';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** The checksum decoded from its documented form (base62, most significant digit first). */
function decodeBase62(s: string): number {
  let n = 0;
  for (const c of s) n = n * 62 + BASE62.indexOf(c);
  return n;
}

describe('API key format', () => {
  it('is the prefix, 32 random base62 characters and a 6-character base62 CRC32 of the rest', () => {
    const { key, displayPrefix, id } = generateApiKey('atp_');
    expect(API_KEY_RANDOM_LENGTH).toBe(32);
    expect(API_KEY_CHECKSUM_LENGTH).toBe(6);
    // The regex a secret scanner would use.
    expect(key).toMatch(/^atp_[0-9A-Za-z]{38}$/);
    const body = key.slice(0, -6);
    expect(decodeBase62(key.slice(-6))).toBe(crc32(body));
    // The display prefix: the configured prefix and the first 8 random characters.
    expect(displayPrefix).toBe(key.slice(0, 4 + 8));
    // The id, under which the key is stored, is its SHA-256 in hex.
    expect(id).toBe(createHash('sha256').update(key, 'utf8').digest('hex'));
    expect(apiKeyIdOf(key)).toBe(id);
    expect(isWellFormedApiKey(key, 'atp_')).toBe(true);
  });

  it('draws every random character from the whole base62 alphabet, and never repeats a key', () => {
    const keys = Array.from({ length: 2000 }, () => generateApiKey('k-').key);
    expect(new Set(keys).size).toBe(keys.length);
    const randomParts = keys.map((k) => k.slice(2, 2 + 32));
    const seen = new Set(randomParts.join(''));
    expect([...seen].sort().join('')).toBe([...BASE62].sort().join(''));
    // Each of the 32 positions varies (no fixed or derived characters among them).
    for (let i = 0; i < 32; i++) {
      expect(new Set(randomParts.map((r) => r[i])).size).toBeGreaterThan(40);
    }
  });

  it('refuses every single-character typo and every swap of two neighbours', () => {
    const { key } = generateApiKey('atp_');
    let tried = 0;
    for (let i = 4; i < key.length; i++) {
      for (const c of BASE62) {
        if (c === key[i]) continue;
        const typo = key.slice(0, i) + c + key.slice(i + 1);
        expect(isWellFormedApiKey(typo, 'atp_')).toBe(false);
        tried++;
      }
      if (i + 1 < key.length && key[i] !== key[i + 1]) {
        const swapped = key.slice(0, i) + key[i + 1] + key[i] + key.slice(i + 2);
        expect(isWellFormedApiKey(swapped, 'atp_')).toBe(false);
      }
    }
    expect(tried).toBe(38 * 61);
  });

  it.each([
    ['another prefix', (k: string) => `xyz_${k.slice(4)}`],
    ['no prefix', (k: string) => k.slice(4)],
    ['a character missing', (k: string) => k.slice(0, -1)],
    ['a character more', (k: string) => `${k}0`],
    ['surrounding space', (k: string) => ` ${k} `],
    ['a trailing newline', (k: string) => `${k}\n`],
    ['a non-base62 character', (k: string) => `${k.slice(0, 10)}-${k.slice(11)}`],
    ['lower-cased', (k: string) => k.toLowerCase()],
    ['empty', () => ''],
    ['a huge string', (k: string) => k.repeat(10_000)],
  ])('refuses a key with %s', (_label, alter) => {
    const { key } = generateApiKey('atp_');
    expect(isWellFormedApiKey(alter(key), 'atp_')).toBe(false);
  });

  it('refuses what is not a string', () => {
    for (const value of [undefined, null, 42, {}, ['atp_']]) {
      expect(isWellFormedApiKey(value, 'atp_')).toBe(false);
    }
  });

  it('checks the checksum against the prefix too: a key moved to another prefix is refused', () => {
    const { key } = generateApiKey('one_');
    expect(isWellFormedApiKey(key, 'one_')).toBe(true);
    expect(isWellFormedApiKey(`two_${key.slice(4)}`, 'two_')).toBe(false);
  });
});
