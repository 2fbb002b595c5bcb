import type { CacheResult, DidCache, DidDocument } from '@atproto/identity';
import { FetchRequestError } from '@atproto-labs/fetch-node';
import { AtProtoServiceJwtError } from '../errors/at-proto-service-jwt.error.js';

/** What the resolver needs of `@atproto/identity` (an optional peer, loaded at boot). @internal */
export type IdentityModule = Pick<
  typeof import('@atproto/identity'),
  | 'IdResolver'
  | 'getDidKeyFromMultibase'
  | 'DidNotFoundError'
  | 'PoorlyFormattedDidError'
  | 'PoorlyFormattedDidDocumentError'
  | 'UnsupportedDidMethodError'
  | 'UnsupportedDidWebPathError'
>;

/** Issuers whose DID resolves to nothing usable: refused without asking again for this long. */
const UNKNOWN_ISSUER_TTL_MS = 60_000;
/** Issuers whose DID document could not be fetched (PLC or host down): a shorter wait. */
const UNAVAILABLE_ISSUER_TTL_MS = 5_000;
/** A cached DID document is refreshed in the background once it is this old. */
const DOC_STALE_MS = 10 * 60_000;
/** A cached DID document older than this is not used at all. */
const DOC_MAX_AGE_MS = 24 * 3_600_000;
/** DID documents (and refused issuers) held in memory, the oldest dropped first. */
const MAX_ENTRIES = 10_000;
/**
 * A DID's document is fetched again on demand (after a signature that does not match) at
 * most this often; meanwhile such requests reuse the cached document. Whoever sends a token
 * chooses its issuer and can sign it badly: without this, tokens in a victim's name would
 * make this server fetch its document at will, until the directory rate-limits this server.
 */
const FORCED_REFRESH_INTERVAL_MS = 30_000;

/**
 * Answers that say "not now" rather than "no such DID": the directory or host is busy (429),
 * timed out waiting (408) or failing (5xx). `@atproto/identity` reads any failed did:web
 * answer as "not found", so the resolver's fetch throws this before the answer reaches it.
 */
const isTransientStatus = (status: number): boolean =>
  status === 408 || status === 429 || status >= 500;

/** Thrown by the resolver's fetch on a transient answer (see {@link isTransientStatus}). */
class TransientAnswerError extends Error {
  constructor(readonly status: number) {
    super(`The DID document host answered ${status}.`);
    this.name = 'TransientAnswerError';
  }
}

/**
 * DID documents in memory, bounded (issuers are chosen by whoever sends a token), refreshed
 * in the background when stale: `@atproto/identity` awaits `refreshCache` on a stale hit,
 * which would put a PLC round trip in front of a request that has a usable document.
 */
class BoundedDidCache implements DidCache {
  readonly #entries = new Map<string, { doc: DidDocument; updatedAt: number }>();
  readonly #refreshing = new Set<string>();

  async cacheDid(did: string, doc: DidDocument): Promise<void> {
    this.#entries.delete(did);
    this.#entries.set(did, { doc, updatedAt: Date.now() });
    if (this.#entries.size > MAX_ENTRIES) {
      this.#entries.delete(this.#entries.keys().next().value as string);
    }
  }

  async checkCache(did: string): Promise<CacheResult | null> {
    const entry = this.#entries.get(did);
    if (!entry) return null;
    const age = Date.now() - entry.updatedAt;
    return { did, ...entry, stale: age > DOC_STALE_MS, expired: age > DOC_MAX_AGE_MS };
  }

  async refreshCache(did: string, getDoc: () => Promise<DidDocument | null>): Promise<void> {
    if (this.#refreshing.has(did)) return;
    this.#refreshing.add(did);
    // Not awaited: the stale document serves meanwhile. A failed refresh keeps it.
    void getDoc()
      .then((doc) => (doc ? this.cacheDid(did, doc) : this.clearEntry(did)))
      .catch(() => undefined)
      .finally(() => this.#refreshing.delete(did));
  }

  async clearEntry(did: string): Promise<void> {
    this.#entries.delete(did);
  }

  async clear(): Promise<void> {
    this.#entries.clear();
  }
}

/** Options of {@link IssuerKeyResolver}. @internal */
export interface IssuerKeyResolverOptions {
  /** PLC directory for `did:plc`. */
  plcUrl: string | undefined;
  /** The SSRF-guarded fetch (see oauth/outbound-fetch.ts): issuers are attacker-chosen. */
  fetch: typeof globalThis.fetch;
  timeoutMs: number;
}

/**
 * The signing key (`did:key:…`) of a service-auth token's issuer, from its DID document:
 * `#atproto_label` for a labeler (`iss` = `did#atproto_labeler`), `#atproto` for everyone
 * else. Documents are resolved by `@atproto/identity` through the module's guarded fetch
 * (so `did:web:<host>` cannot point this server at its private network), cached, and
 * fetched again on demand (`forceRefresh`, after a signature that does not match: the key
 * may have been rotated). Concurrent resolutions of one DID share one request. An issuer
 * that cannot be resolved is refused without asking again for a while, so that junk tokens
 * cannot make this server fetch documents at will.
 * @internal
 */
export class IssuerKeyResolver {
  readonly #identity: IdentityModule;
  readonly #resolver: InstanceType<IdentityModule['IdResolver']>['did'];
  readonly #refused = new Map<string, { until: number; error: AtProtoServiceJwtError }>();
  readonly #inflight = new Map<string, Promise<DidDocument>>();
  readonly #cache = new BoundedDidCache();
  /** When each DID's document was last fetched on demand (bounded as the cache is). */
  readonly #forcedAt = new Map<string, number>();

  constructor(identity: IdentityModule, options: IssuerKeyResolverOptions) {
    this.#identity = identity;
    const { fetch } = options;
    this.#resolver = new identity.IdResolver({
      ...(options.plcUrl ? { plcUrl: options.plcUrl } : {}),
      timeout: options.timeoutMs,
      didCache: this.#cache,
      fetch: async (input, init) => {
        const response = await fetch(input, init);
        if (isTransientStatus(response.status)) {
          await response.body?.cancel();
          throw new TransientAnswerError(response.status);
        }
        return response;
      },
    }).did;
  }

  /** The `did:key` that signs for `iss` (`did` or `did#serviceId`). */
  async key(iss: string, forceRefresh: boolean): Promise<string> {
    const hash = iss.indexOf('#');
    const did = hash === -1 ? iss : iss.slice(0, hash);
    const keyId =
      hash !== -1 && iss.slice(hash + 1) === 'atproto_labeler' ? 'atproto_label' : 'atproto';
    const refused = this.#refused.get(did);
    if (refused) {
      if (refused.until > Date.now()) throw refused.error;
      this.#refused.delete(did);
    }
    const doc = await this.#document(did, forceRefresh);
    const method = doc.verificationMethod?.find(
      (m) => m.id === `#${keyId}` || m.id === `${did}#${keyId}`,
    );
    const key =
      method?.publicKeyMultibase === undefined
        ? undefined
        : safely(() =>
            this.#identity.getDidKeyFromMultibase({
              type: method.type,
              publicKeyMultibase: method.publicKeyMultibase as string,
            }),
          );
    if (!key) {
      throw new AtProtoServiceJwtError(
        'BadJwtIssuer',
        `The issuer's DID document has no usable #${keyId} key.`,
      );
    }
    return key;
  }

  #document(did: string, forceRefresh: boolean): Promise<DidDocument> {
    const fresh = forceRefresh && this.#mayForce(did);
    const flight = `${fresh ? 'fresh' : 'any'} ${did}`;
    let pending = this.#inflight.get(flight);
    if (!pending) {
      pending = this.#resolver
        .ensureResolve(did, fresh)
        .catch(async (error: unknown) => {
          const refusal = this.#refusal(error);
          if (fresh) {
            // Whoever sent the bad signature chose this DID: a failed re-resolution keeps
            // the document the issuer's own tokens verify against (the token then fails on
            // its signature), and refuses nothing.
            const cached = await this.#cache.checkCache(did);
            if (cached && !cached.expired) return cached.doc;
          }
          this.#refuse(did, refusal);
          throw refusal;
        })
        .finally(() => this.#inflight.delete(flight));
      this.#inflight.set(flight, pending);
    }
    return pending;
  }

  /** Whether a forced re-resolution of `did` may fetch now; if so, it is recorded as done. */
  #mayForce(did: string): boolean {
    const now = Date.now();
    const last = this.#forcedAt.get(did);
    if (last !== undefined && now - last < FORCED_REFRESH_INTERVAL_MS) return false;
    this.#forcedAt.delete(did);
    this.#forcedAt.set(did, now);
    if (this.#forcedAt.size > MAX_ENTRIES) {
      this.#forcedAt.delete(this.#forcedAt.keys().next().value as string);
    }
    return true;
  }

  #refuse(did: string, error: AtProtoServiceJwtError): void {
    const ttl = error.status === 503 ? UNAVAILABLE_ISSUER_TTL_MS : UNKNOWN_ISSUER_TTL_MS;
    this.#refused.delete(did);
    this.#refused.set(did, { until: Date.now() + ttl, error });
    if (this.#refused.size > MAX_ENTRIES) {
      this.#refused.delete(this.#refused.keys().next().value as string);
    }
  }

  /** What a resolution failure means for the token: a bad issuer, or try again later. */
  #refusal(error: unknown): AtProtoServiceJwtError {
    const id = this.#identity;
    const status = (error as { status?: unknown } | null)?.status;
    if (
      error instanceof id.DidNotFoundError ||
      error instanceof id.PoorlyFormattedDidError ||
      error instanceof id.PoorlyFormattedDidDocumentError ||
      error instanceof id.UnsupportedDidMethodError ||
      error instanceof id.UnsupportedDidWebPathError ||
      // A document that is not JSON.
      error instanceof SyntaxError ||
      // The guarded fetch refused the URL (a private or forbidden host, plain http).
      (error instanceof FetchRequestError && !isTransientStatus(error.statusCode)) ||
      // The PLC directory refused the DID (4xx other than 404, 408 and 429).
      (typeof status === 'number' && !isTransientStatus(status))
    ) {
      return new AtProtoServiceJwtError(
        'BadJwtIssuer',
        'The issuer DID cannot be resolved to a DID document.',
        { cause: error },
      );
    }
    return new AtProtoServiceJwtError(
      'IssuerUnavailable',
      "The issuer's DID document cannot be fetched right now. Try again.",
      { cause: error },
    );
  }
}

function safely<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}
