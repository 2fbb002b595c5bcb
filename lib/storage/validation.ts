import { AtProtoStoreError } from '../errors/at-proto-store.error.js';
import { DID_MAX_LENGTH, STATE_KEY_MAX_LENGTH } from './entities/columns.js';

// DID syntax as the AT Protocol spec gives it (https://atproto.com/specs/did): ASCII only,
// a lowercase method, and an identifier that does not end with ':' or '%'.
const DID_SYNTAX = /^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$/;
// OAuth `state` values are opaque but travel in URLs: printable ASCII without spaces.
const STATE_KEY_SYNTAX = /^[\x21-\x7e]+$/;

function preview(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value);
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}…` : text);
}

/**
 * Throws a clear error unless `did` is a syntactically valid DID that fits the schema.
 * @internal
 */
export function assertValidDid(did: unknown): asserts did is string {
  if (typeof did !== 'string' || did.length > DID_MAX_LENGTH || !DID_SYNTAX.test(did)) {
    throw new AtProtoStoreError(
      `Invalid DID ${preview(did)}: expected "did:<method>:<identifier>" in ASCII letters, digits ` +
        `and ._:%- (at most ${DID_MAX_LENGTH} characters), as the AT Protocol DID spec defines.`,
    );
  }
}

/**
 * Throws a clear error unless `key` is a usable OAuth state key.
 * @internal
 */
export function assertValidStateKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length > STATE_KEY_MAX_LENGTH || !STATE_KEY_SYNTAX.test(key)) {
    throw new AtProtoStoreError(
      `Invalid OAuth state key ${preview(key)}: expected 1 to ${STATE_KEY_MAX_LENGTH} printable ASCII characters.`,
    );
  }
}

/**
 * Throws unless a session's token set belongs to `did` (a value written under the wrong
 * key, or a row swapped in the database, must never be handed out).
 * @internal
 */
export function assertSessionBelongsTo(did: string, sub: unknown): void {
  if (sub !== did) {
    throw new AtProtoStoreError(
      `The stored OAuth session for ${preview(did)} belongs to another DID: refusing to use it. ` +
        `The row was written under the wrong key or altered in the database.`,
    );
  }
}
