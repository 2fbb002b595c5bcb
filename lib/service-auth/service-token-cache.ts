import { decodeJwt } from 'jose';

/** The longest lifetime a PDS gives a service-auth token (`getServiceAuth` refuses more). */
const MAX_TOKEN_LIFETIME_MS = 3_600_000;

/**
 * What identifies a cached token: the user it was minted for, its audience and its method
 * (`null` for a method-less token).
 * @internal
 */
export interface ServiceTokenKey {
  readonly did: string;
  readonly aud: string;
  readonly lxm: string | null;
}

/** A token and the instant (epoch ms) until which it may be handed out. @internal */
export interface CachedServiceToken {
  readonly token: string;
  readonly validUntil: number;
}

/**
 * Where tokens are shared between instances (Redis). Best effort: a failed `get` is a miss,
 * a failed `set` is dropped; `invalidate` may throw.
 * @internal
 */
export interface SharedServiceTokenStore {
  get(key: ServiceTokenKey, now: number): Promise<CachedServiceToken | undefined>;
  set(key: ServiceTokenKey, value: CachedServiceToken, now: number): Promise<void>;
  invalidate(did: string, aud: string | undefined): Promise<void>;
}

/**
 * Counters of the service-token cache.
 * @publicApi
 */
export interface AtProtoServiceAuthStats {
  /**
   * Tokens known to this instance: cached here, or (with Redis) read from or written to the
   * shared cache by this instance, until the sweep drops them.
   */
  readonly entries: number;
  /** Of `entries`, those that may still be handed out (valid beyond the margin). */
  readonly valid: number;
  /** Of `entries`, those past that point, until a read or the sweep drops them. */
  readonly expired: number;
  /** Calls answered without minting: from the cache, or by joining a mint in flight. */
  readonly hits: number;
  /** Calls that minted a token (one request to the PDS each). */
  readonly misses: number;
}

/** Options of {@link ServiceTokenCache}. @internal */
export interface ServiceTokenCacheOptions {
  /** A token is handed out only while it stays valid at least this long. */
  readonly marginMs: number;
  /** Lifetime of a token whose expiry cannot be read. */
  readonly fallbackTtlMs: number;
  /** The clock, epoch ms. @default Date.now */
  readonly now?: () => number;
  /** Tokens shared with other instances; without it, tokens live in this process only. */
  readonly shared?: SharedServiceTokenStore;
  /** Called when a token's expiry cannot be read (the token is not given). */
  readonly onUnreadableExpiry?: (key: ServiceTokenKey) => void;
}

interface Entry extends ServiceTokenKey {
  /** The token, when this process holds it (no shared store). */
  readonly token: string | undefined;
  readonly validUntil: number;
}

/**
 * The service-token cache, without Nest and without the network: per (did, aud, lxm), a
 * token is handed out until its expiry (read from the JWT, unverified) minus the margin;
 * concurrent callers of one key share one mint; invalidation per DID or per (DID, audience).
 * Kept apart from the service so that its rules can be tested with a clock under control.
 * @internal
 */
export class ServiceTokenCache {
  readonly #entries = new Map<string, Entry>();
  readonly #inFlight = new Map<string, Promise<string>>();
  /**
   * Bumped by every invalidation of a DID: a mint that started before one must not store
   * its token after it (it could be the very token the audience just refused).
   */
  readonly #generations = new Map<string, number>();
  readonly #now: () => number;
  #hits = 0;
  #misses = 0;

  constructor(private readonly options: ServiceTokenCacheOptions) {
    this.#now = options.now ?? Date.now;
  }

  /**
   * The cached token for `key`, or the one `mint` returns (shared by every caller of the same
   * key meanwhile). With `fresh`, the cache is not read: a new token is minted (a caller that
   * saw its token refused), though callers in flight for a fresh one are still joined.
   */
  async get(key: ServiceTokenKey, mint: () => Promise<string>, fresh = false): Promise<string> {
    const id = entryId(key);
    if (!fresh && !this.options.shared) {
      const entry = this.#entries.get(id);
      if (entry?.token !== undefined && entry.validUntil > this.#now()) {
        this.#hits++;
        return entry.token;
      }
      // Evicted on read: an expired token is never handed out, and need not wait for the sweep.
      if (entry) this.#entries.delete(id);
    }
    const freshId = `${id}\u0000fresh`;
    const flightId = fresh ? freshId : id;
    // A fresh mint in flight serves every caller; a plain one serves only plain callers (a
    // fresh caller has seen the token refused and must not get it back from the cache).
    const joined =
      this.#inFlight.get(flightId) ?? (fresh ? undefined : this.#inFlight.get(freshId));
    if (joined) {
      this.#hits++;
      return joined;
    }
    const flight = this.#fill(key, id, mint, fresh).finally(() => {
      if (this.#inFlight.get(flightId) === flight) this.#inFlight.delete(flightId);
    });
    this.#inFlight.set(flightId, flight);
    return flight;
  }

  async #fill(
    key: ServiceTokenKey,
    id: string,
    mint: () => Promise<string>,
    fresh: boolean,
  ): Promise<string> {
    const generation = this.#generations.get(key.did) ?? 0;
    if (!fresh && this.options.shared) {
      const found = await this.options.shared.get(key, this.#now());
      if (found && found.validUntil > this.#now()) {
        this.#hits++;
        this.#remember(key, id, undefined, found.validUntil);
        return found.token;
      }
    }
    this.#misses++;
    const token = await mint();
    const validUntil = this.validUntil(key, token);
    // A token that is already within the margin is handed to this caller (the PDS just
    // issued it) but not kept; nor is one minted before an invalidation of its DID.
    if (validUntil > this.#now() && (this.#generations.get(key.did) ?? 0) === generation) {
      if (this.options.shared) {
        await this.options.shared.set(key, { token, validUntil }, this.#now());
        this.#remember(key, id, undefined, validUntil);
      } else {
        this.#remember(key, id, token, validUntil);
      }
    }
    return token;
  }

  /**
   * Until when `token` may be handed out: its `exp` (read without verifying the signature:
   * the PDS that just issued it is the one trusted here), at most an hour from now, minus the
   * margin; or the fallback lifetime from now when there is no readable `exp`.
   */
  validUntil(key: ServiceTokenKey, token: string): number {
    let exp: unknown;
    try {
      exp = decodeJwt(token).exp;
    } catch {
      exp = undefined;
    }
    if (typeof exp === 'number' && Number.isFinite(exp)) {
      // No PDS issues tokens for longer than an hour: a later exp (a PDS that misbehaves, or a
      // clock far behind) is not believed beyond that, so that nothing is cached for days.
      return Math.min(exp * 1000, this.#now() + MAX_TOKEN_LIFETIME_MS) - this.options.marginMs;
    }
    this.options.onUnreadableExpiry?.(key);
    return this.#now() + this.options.fallbackTtlMs;
  }

  #remember(key: ServiceTokenKey, id: string, token: string | undefined, validUntil: number) {
    this.#entries.set(id, { did: key.did, aud: key.aud, lxm: key.lxm, token, validUntil });
  }

  /**
   * Forgets the DID's tokens, or only those for `aud` (a bare DID also matches its
   * `#service` forms), here and in the shared store; mints in flight for the DID are
   * neither joined nor stored afterwards.
   */
  async invalidate(did: string, aud?: string): Promise<void> {
    this.#generations.set(did, (this.#generations.get(did) ?? 0) + 1);
    for (const [id, entry] of this.#entries) {
      if (entry.did === did && audienceMatches(entry.aud, aud)) this.#entries.delete(id);
    }
    const prefix = `[${JSON.stringify(did)},`;
    for (const flightId of this.#inFlight.keys()) {
      if (!flightId.startsWith(prefix)) continue;
      const [, entryAud] = JSON.parse(flightId.split('\u0000')[0] as string) as [string, string];
      if (audienceMatches(entryAud, aud)) this.#inFlight.delete(flightId);
    }
    await this.options.shared?.invalidate(did, aud);
  }

  /** Drops the entries that may no longer be handed out; returns how many. */
  sweep(): number {
    const now = this.#now();
    let dropped = 0;
    for (const [id, entry] of this.#entries) {
      if (entry.validUntil <= now) {
        this.#entries.delete(id);
        dropped++;
      }
    }
    return dropped;
  }

  stats(): AtProtoServiceAuthStats {
    const now = this.#now();
    let valid = 0;
    for (const entry of this.#entries.values()) if (entry.validUntil > now) valid++;
    const entries = this.#entries.size;
    return { entries, valid, expired: entries - valid, hits: this.#hits, misses: this.#misses };
  }

  /** Forgets everything (module shutdown). */
  clear(): void {
    this.#entries.clear();
    this.#inFlight.clear();
  }
}

/**
 * The entry's identifier: JSON of `[did, aud, lxm]`, unambiguous whatever the strings
 * contain (its start `["<did>",` names the DID, for invalidation).
 */
function entryId(key: ServiceTokenKey): string {
  return JSON.stringify([key.did, key.aud, key.lxm]);
}

/**
 * Whether an entry for `entryAud` falls under an invalidation of `aud`: every entry without
 * `aud`; the same audience; and, for a bare DID, its `did#service` forms too.
 * @internal
 */
export function audienceMatches(entryAud: string, aud: string | undefined): boolean {
  if (aud === undefined) return true;
  return entryAud === aud || (!aud.includes('#') && entryAud.startsWith(`${aud}#`));
}
