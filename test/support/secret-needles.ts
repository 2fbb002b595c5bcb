import { createDecipheriv } from 'node:crypto';

// What tests that look for secrets at rest share: decrypting the documented envelope with
// node:crypto alone, and the "needles" (a secret in clear and in every encoding it could be
// stored in) to search dumps for, reported by label so a failure never prints a secret.

/**
 * Decrypts an envelope from its documented format (docs/encryption.md) with node:crypto
 * only, no KeyRing: proof that the format is what the docs say.
 */
export function openEnvelope(
  envelope: string,
  context: string,
  key: { id: string; base64: string },
): string {
  const [version, keyId, iv, body] = envelope.split('.') as [string, string, string, string];
  if (version !== 'v1' || keyId !== key.id)
    throw new Error(`unexpected envelope ${version}.${keyId}`);
  const bytes = Buffer.from(body, 'base64url');
  const decipher = createDecipheriv(
    'aes-256-gcm',
    Buffer.from(key.base64, 'base64'),
    Buffer.from(iv, 'base64url'),
  );
  decipher.setAAD(Buffer.from(`nestjs-atproto-auth:v1:${keyId}:${context}`, 'utf8'));
  decipher.setAuthTag(bytes.subarray(bytes.length - 16));
  return Buffer.concat([
    decipher.update(bytes.subarray(0, bytes.length - 16)),
    decipher.final(),
  ]).toString('utf8');
}

export function jwkD(jwk: unknown): string {
  const d = (jwk as { d?: unknown }).d;
  if (typeof d !== 'string' || d.length < 40) throw new Error('expected a private JWK');
  return d;
}

export type Needle = { label: string; value: string };

/** The secret, and the base64 / base64url / hex encodings of its UTF-8 bytes. */
export function encodings(label: string, value: string): Needle[] {
  return [
    { label: `${label} (clear)`, value },
    ...bytesEncodings(label, Buffer.from(value, 'utf8')),
  ];
}

/** A JWK `d` (base64url text): the text and its encodings, and the raw key bytes' encodings. */
export function jwkDEncodings(label: string, d: string): Needle[] {
  return [
    ...encodings(label, d),
    ...bytesEncodings(`${label} raw bytes`, Buffer.from(d, 'base64url')),
  ];
}

export function bytesEncodings(label: string, bytes: Buffer): Needle[] {
  const needles: Needle[] = [
    { label: `${label} (base64)`, value: bytes.toString('base64') },
    { label: `${label} (base64url)`, value: bytes.toString('base64url') },
    { label: `${label} (hex)`, value: bytes.toString('hex') },
    { label: `${label} (HEX)`, value: bytes.toString('hex').toUpperCase() },
  ];
  // The secret inside a larger base64-encoded value (e.g. a whole JSON document encoded):
  // depending on its offset modulo 3 it encodes to one of three strings. Dropping the first
  // and last 4-character groups, which can mix in neighbouring bytes, leaves what any such
  // encoding must contain.
  for (const shift of [0, 1, 2]) {
    const core = Buffer.concat([Buffer.alloc(shift), bytes])
      .toString('base64')
      .slice(4, -4);
    needles.push({ label: `${label} (base64 at offset ${shift})`, value: core });
    needles.push({
      label: `${label} (base64url at offset ${shift})`,
      value: core.replaceAll('+', '-').replaceAll('/', '_'),
    });
  }
  return needles;
}

/** The raw bytes themselves, for searching binary files (as latin1 text). */
export function rawBytesNeedles(label: string, d: string): Needle[] {
  return [{ label: `${label} (raw bytes)`, value: Buffer.from(d, 'base64url').toString('latin1') }];
}

/** Which needles occur in `haystack`, by label only: a failure never prints a secret. */
export function leaks(haystack: string, needles: Needle[]): string[] {
  return needles.filter((n) => haystack.includes(n.value)).map((n) => n.label);
}
