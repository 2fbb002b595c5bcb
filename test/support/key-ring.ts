import { randomBytes } from 'node:crypto';
import { KeyRing, installKeyRing } from 'nestjs-atproto-auth';

/** A fresh random key, base64 as the options take it. */
export function randomKey(): string {
  return randomBytes(32).toString('base64');
}

/** Installs (and returns) a key ring with one random key, as the module does at boot. */
export function installTestKeyRing(
  activeKeyId = 'test-1',
  keys: Record<string, string> = {},
): KeyRing {
  const ring = new KeyRing({ activeKeyId, keys: { [activeKeyId]: randomKey(), ...keys } });
  installKeyRing(ring);
  return ring;
}
