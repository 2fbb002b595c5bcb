import { createHash } from 'node:crypto';
import type { KeyRing } from '../crypto/key-ring.js';
import { describeError } from '../errors/describe-error.js';
import { AtProtoUnavailableError } from '../errors/at-proto-http.errors.js';
import type { RedisScriptingClient } from '../storage/redis/redis-client.js';
import type {
  CachedServiceToken,
  ServiceTokenKey,
  SharedServiceTokenStore,
} from './service-token-cache.js';

/** What is sealed under a token's key. */
interface Payload {
  /** The token. */
  t: string;
  /** Until when it may be handed out, epoch ms. */
  u: number;
  /** Its audience and method, checked on read: a value is only ever used for its own key. */
  a: string;
  m: string | null;
}

// Stores the token and records it in the DID's index (field: the token key's suffix; value:
// the audience, so that an invalidation by audience needs no decryption). The index lives as
// long as the longest token it lists. One script, so that no token exists without its entry.
const SET_SCRIPT = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1`;

// Deletes the DID's tokens listed in its index whose audience matches (ARGV[2] = '' for
// all; a bare DID also matches its '#service' forms), and their index fields. The token keys
// share the index's hash tag, so they live on the same cluster slot.
const INVALIDATE_SCRIPT = `
local fields = redis.call('HGETALL', KEYS[1])
local aud = ARGV[2]
local n = 0
for i = 1, #fields, 2 do
  local field, entryAud = fields[i], fields[i + 1]
  if aud == '' or entryAud == aud
    or (string.find(aud, '#', 1, true) == nil and string.sub(entryAud, 1, #aud + 1) == aud .. '#') then
    redis.call('DEL', ARGV[1] .. field)
    redis.call('HDEL', KEYS[1], field)
    n = n + 1
  end
end
return n`;

/**
 * The service-token cache shared by every instance through Redis. Tokens are sealed with
 * the module's key ring (AES-256-GCM, associated data `redis:` + the full key, as the Redis
 * stores do), each under `<prefix>service-auth:{<did>}:<digest of aud and lxm>` with a TTL
 * that ends when the token may no longer be handed out; `<prefix>service-auth:{<did>}` (a
 * hash) lists them for invalidation. Reads and writes are best effort: a failure is a miss
 * (the caller mints) and is logged without the token.
 * @internal
 */
export class RedisServiceTokenStore implements SharedServiceTokenStore {
  constructor(
    private readonly redis: RedisScriptingClient,
    private readonly keyRing: KeyRing,
    private readonly keyPrefix: string,
    private readonly logger: { warn(message: string): void },
  ) {}

  #keys(key: { did: string; aud?: string; lxm?: string | null }) {
    const base = `${this.keyPrefix}service-auth:{${key.did}}`;
    const field =
      key.aud === undefined
        ? ''
        : createHash('sha256')
            .update(JSON.stringify([key.aud, key.lxm ?? null]))
            .digest('base64url');
    return { index: base, entryPrefix: `${base}:`, field, entry: `${base}:${field}` };
  }

  async get(key: ServiceTokenKey, now: number): Promise<CachedServiceToken | undefined> {
    const { entry } = this.#keys(key);
    try {
      const sealed = await this.redis.get(entry);
      if (sealed === null || sealed === undefined) return undefined;
      const payload = JSON.parse(this.keyRing.decrypt(sealed, `redis:${entry}`)) as Payload;
      this.#lastFailure = '';
      if (
        typeof payload?.t !== 'string' ||
        typeof payload.u !== 'number' ||
        payload.a !== key.aud ||
        payload.m !== key.lxm
      ) {
        return undefined;
      }
      return payload.u > now ? { token: payload.t, validUntil: payload.u } : undefined;
    } catch (error) {
      this.#failed('read', error);
      return undefined;
    }
  }

  async set(key: ServiceTokenKey, value: CachedServiceToken, now: number): Promise<void> {
    const ttl = Math.floor(value.validUntil - now);
    if (ttl < 1) return;
    const { entry, index, field } = this.#keys(key);
    try {
      const payload: Payload = { t: value.token, u: value.validUntil, a: key.aud, m: key.lxm };
      const sealed = this.keyRing.encrypt(JSON.stringify(payload), `redis:${entry}`);
      await this.redis.eval(SET_SCRIPT, 2, entry, index, sealed, ttl, field, key.aud);
      this.#lastFailure = '';
    } catch (error) {
      this.#failed('write', error);
    }
  }

  async invalidate(did: string, aud: string | undefined): Promise<void> {
    const { index, entryPrefix } = this.#keys({ did });
    try {
      await this.redis.eval(INVALIDATE_SCRIPT, 1, index, entryPrefix, aud ?? '');
    } catch (error) {
      // Not swallowed: a caller that invalidates must know when other instances may still
      // hand out the token.
      throw new AtProtoUnavailableError(
        'The shared service-token cache (Redis) could not be reached: other instances may still hand out these tokens until they expire. Try again.',
        { cause: error },
      );
    }
  }

  #lastFailure = '';

  #failed(operation: string, error: unknown): void {
    // The error names the command or the key id, never the sealed value. While Redis stays
    // down every call fails the same way: logged when the failure changes, not every time.
    const line = `The shared service-token cache could not ${operation} an entry (treated as a miss): ${describeError(error)}`;
    if (line !== this.#lastFailure) this.logger.warn(line);
    this.#lastFailure = line;
  }
}
