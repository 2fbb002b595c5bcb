import { createHash } from 'node:crypto';

/**
 * What an inbound token says, read and checked once (shape, `typ`, `alg`, the issuer's DID
 * method): the claims the checks of every request need after its signature is verified.
 * @internal
 */
export interface VerifiedClaims {
  readonly iss: string;
  /** The DID part of `iss`. */
  readonly did: string;
  /** The fragment of `iss` (`did#serviceId`), if any. */
  readonly serviceId: string | undefined;
  readonly aud: string;
  /** `null` for a method-less token. */
  readonly lxm: string | null;
  /** Epoch seconds, as in the token. */
  readonly exp: number;
  /** Epoch seconds, as in the token, if it has one. */
  readonly iat: number | undefined;
  readonly jti: string | undefined;
}

/**
 * Counters of the verified-token cache of inbound service auth
 * (`AtProtoServiceJwtVerifier.stats()`).
 * @publicApi
 */
export interface AtProtoVerifiedTokenCacheStats {
  /**
   * Tokens held (verified; an expired one until it is read or pushed out), at most
   * `serviceAuth.verifiedCacheMaxEntries`.
   */
  readonly entries: number;
  /** Requests whose token was found already verified: no signature check, no DID lookup. */
  readonly hits: number;
  /** Requests whose token was not found (or found expired), and so verified in full. */
  readonly misses: number;
}

/**
 * Inbound service-auth tokens whose signature has been verified, so that a token a caller
 * reuses (a PDS's token lives 60 s; `AtProtoServiceAuthService` and other clients reuse one
 * for most of that) is not verified again on every request: the ECDSA check and the issuer's
 * key lookup are what an inbound request costs most (about 3.5 ms of CPU).
 *
 * Why this is safe: what is cached is only the outcome of the checks that depend on the
 * token alone (its signature, its shape, its issuer's DID method), and a valid signature
 * stays valid until `exp` whatever happens to the issuer's key afterwards: a key rotation
 * does not revoke tokens already signed with the previous key, and any verifier that has
 * checked one (or that holds the issuer's DID document, as the resolver does for minutes)
 * accepts it meanwhile. Every rule that can differ per request or per route still runs on a
 * hit: `exp` against the clock, `maxAge`, `iat` and the clock skew, the route's audiences and
 * method, and the `jti` claim of single-use routes.
 *
 * - Keyed by the SHA-256 of the exact token string: the token itself is never held as a key.
 * - Only tokens whose signature verified are added; a refusal is never remembered.
 * - An entry lives until the token's `exp`, never longer, and is dropped when read after it.
 * - At most `maxEntries` entries, the least recently used dropped first; 0: no cache.
 * @internal
 */
export class VerifiedTokenCache {
  readonly #entries = new Map<string, VerifiedClaims>();
  readonly #now: () => number;
  #hits = 0;
  #misses = 0;

  /**
   * @param maxEntries most tokens held at once; 0 turns the cache off
   * @param now the clock, epoch ms
   */
  constructor(
    readonly maxEntries: number,
    now: () => number = Date.now,
  ) {
    this.#now = now;
  }

  /** Whether tokens are cached at all (`maxEntries` > 0). */
  get enabled(): boolean {
    return this.maxEntries > 0;
  }

  /** The key of a token: SHA-256 of its exact string, base64url. */
  static keyOf(token: string): string {
    return createHash('sha256').update(token).digest('base64url');
  }

  /**
   * The claims of the token with this key if it was verified and has not expired (a hit,
   * which makes it the most recently used); otherwise `undefined` (a miss), an expired entry
   * being dropped.
   */
  get(key: string): VerifiedClaims | undefined {
    const claims = this.#entries.get(key);
    if (claims === undefined) {
      this.#misses++;
      return undefined;
    }
    this.#entries.delete(key);
    // Same rule as the checks of every request (`now / 1000 > exp` is JwtExpired).
    if (this.#now() / 1000 > claims.exp) {
      this.#misses++;
      return undefined;
    }
    this.#entries.set(key, claims);
    this.#hits++;
    return claims;
  }

  /** Remembers a token whose signature has just been verified, until its `exp`. */
  set(key: string, claims: VerifiedClaims): void {
    if (this.maxEntries <= 0 || this.#now() / 1000 > claims.exp) return;
    this.#entries.delete(key);
    this.#entries.set(key, claims);
    while (this.#entries.size > this.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value as string);
    }
  }

  stats(): AtProtoVerifiedTokenCacheStats {
    return { entries: this.#entries.size, hits: this.#hits, misses: this.#misses };
  }
}
