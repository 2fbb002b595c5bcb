import { createHash } from 'node:crypto';
import { AtProtoUnavailableError } from '../errors/at-proto-http.errors.js';
import type { RedisScriptingClient } from '../storage/redis/redis-client.js';

/**
 * Where single-use routes remember the tokens they accepted.
 * @internal
 */
export interface JtiReplayStore {
  /**
   * Records `id` for `ttlMs`: `true` when it was not there (first use), `false` when it was
   * (a replay). Throws when the store cannot be reached.
   */
  claim(id: string, ttlMs: number): Promise<boolean>;
}

/** Purge expired ids once the map holds this many, at most once a second. */
const PURGE_ABOVE = 10_000;
/** Most unexpired ids the in-process store remembers (about 150 MB at worst). */
const MAX_ENTRIES = 1_000_000;

/**
 * In this process only: another instance would accept the same token once more.
 * Only tokens with a valid signature reach it, so its size follows real traffic.
 * @internal
 */
export class MemoryJtiReplayStore implements JtiReplayStore {
  readonly #seen = new Map<string, number>();
  #purgedAt = 0;

  /**
   * @param maxEntries most ids remembered at once. Anyone who controls a DID can sign valid
   *   tokens with fresh ids as fast as they like, each remembered up to `serviceAuth.maxAge`:
   *   beyond the bound, once expired ids are purged, a claim throws (the verifier answers
   *   503) rather than forget an unexpired id, which would let its token be replayed. Use
   *   `replayStore: 'redis'` for more. About 150 bytes an id.
   */
  constructor(private readonly maxEntries = MAX_ENTRIES) {}

  async claim(id: string, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    const full = this.#seen.size >= this.maxEntries;
    if ((this.#seen.size > PURGE_ABOVE && now - this.#purgedAt > 1000) || full) {
      this.#purgedAt = now;
      for (const [key, until] of this.#seen) if (until <= now) this.#seen.delete(key);
    }
    const until = this.#seen.get(id);
    if (until !== undefined && until > now) return false;
    if (this.#seen.size >= this.maxEntries) {
      throw new AtProtoUnavailableError(
        `The in-process replay store is full (${this.maxEntries} unexpired token ids): ` +
          "single-use tokens are refused until ids expire; use serviceAuth.replayStore 'redis'.",
      );
    }
    this.#seen.set(id, now + ttlMs);
    return true;
  }
}

// SET NX in one round trip; `eval` because it is what the module's Redis client type
// declares (an ioredis client), and the key and TTL are passed as arguments.
const CLAIM = "return redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'NX') and 1 or 0";

/**
 * Shared by every instance through Redis: `SET key 1 PX ttl NX` on a hash of the issuer and
 * `jti` (the raw values are caller-chosen and may be long).
 * @internal
 */
export class RedisJtiReplayStore implements JtiReplayStore {
  constructor(
    private readonly redis: RedisScriptingClient,
    private readonly keyPrefix: string,
  ) {}

  async claim(id: string, ttlMs: number): Promise<boolean> {
    const key = `${this.keyPrefix}service-jti:${createHash('sha256').update(id).digest('base64url')}`;
    const reply = await this.redis.eval(CLAIM, 1, key, Math.max(1, Math.ceil(ttlMs)));
    return Number(reply) === 1;
  }
}
