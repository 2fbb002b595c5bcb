/**
 * What instances tell each other on the Redis invalidation channel
 * (`<redisKeyPrefix>invalidate`), and how it is written: one JSON object per message.
 * A message names what was revoked by its id (the SHA-256 of the token or key, never the
 * token or key itself) or by its DID, so that anyone who can read the channel learns
 * nothing they could sign in with.
 */

/**
 * A revocation other instances must apply to their caches:
 * - `session`: one app session, by id;
 * - `did`: every app session of a DID created up to `at` (log out everywhere);
 * - `key`: one API key, by id.
 * @internal
 */
export type InvalidationEvent =
  | { readonly kind: 'session'; readonly id: string }
  | { readonly kind: 'did'; readonly did: string; readonly at: number }
  | { readonly kind: 'key'; readonly id: string };

/**
 * An instance's proof that the channel works: it publishes one every 250 ms and must
 * receive its own. `sentAt` is the sender's clock, compared only by the sender.
 * @internal
 */
export interface InvalidationHeartbeat {
  readonly kind: 'heartbeat';
  readonly from: string;
  readonly sentAt: number;
}

/** @internal */
export type InvalidationMessage = InvalidationEvent | InvalidationHeartbeat;

const ID = /^[0-9a-f]{64}$/;
const INSTANCE = /^[A-Za-z0-9_-]{1,64}$/;
/** The stores' bound on a DID's length. */
const DID_MAX_LENGTH = 512;

/** The message as sent on the channel. @internal */
export function encodeInvalidation(message: InvalidationMessage): string {
  return JSON.stringify({ v: 1, ...message });
}

/**
 * The message in `text`, or `undefined` for anything else: the channel is shared with
 * whatever else can publish on this Redis, so a malformed or unknown message is ignored
 * (a later version's kinds included) rather than trusted or thrown on.
 * @internal
 */
export function decodeInvalidation(text: string): InvalidationMessage | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const m = value as Record<string, unknown>;
  if (m.v !== 1) return undefined;
  switch (m.kind) {
    case 'session':
    case 'key':
      return typeof m.id === 'string' && ID.test(m.id) ? { kind: m.kind, id: m.id } : undefined;
    case 'did':
      return typeof m.did === 'string' &&
        m.did.startsWith('did:') &&
        m.did.length <= DID_MAX_LENGTH &&
        Number.isSafeInteger(m.at)
        ? { kind: 'did', did: m.did, at: m.at as number }
        : undefined;
    case 'heartbeat':
      return typeof m.from === 'string' && INSTANCE.test(m.from) && Number.isSafeInteger(m.sentAt)
        ? { kind: 'heartbeat', from: m.from, sentAt: m.sentAt as number }
        : undefined;
    default:
      return undefined;
  }
}
