/**
 * The in-process cache of validated credentials (app sessions, API keys) and what makes it
 * safe to keep entries longer than `appSession.cacheTtl`: tombstones of revocations, so
 * that a store read already in flight when a revocation became known here cannot put the
 * revoked row back, and a long lifetime granted only while revocations made elsewhere are
 * known to reach this instance ({@link CacheTrust}).
 */

/**
 * Whether revocations made on other instances reach this one now (see
 * `AtProtoCacheInvalidation`), which decides how long an entry may live.
 * @internal
 */
export interface CacheTrust {
  /**
   * Whether a record read by a store read that started at `startedAt` and ended at `now`
   * may be kept for the long lifetime (`appSession.invalidatedCacheTtl`).
   */
  grantLong(startedAt: number, now: number): boolean;
  /**
   * Whether entries kept for the long lifetime may still be served at `now`. When not, the
   * lapse has been handled before this returns: every cache has dropped its entries.
   */
  stillTrusted(now: number): boolean;
}

/** What the cache needs of a record. @internal */
export interface CacheableRecord {
  readonly id: string;
  readonly did: string;
  readonly createdAt: Date;
}

/**
 * How long a tombstone refuses the record it names: longer than a store read takes (its
 * retries included, 5 s by default). A read that started before a tombstone that has since
 * been dropped is not cached either (see `#horizon`), so the length is about refusing the
 * stale row, not about what may be cached.
 * @internal
 */
export const TOMBSTONE_TTL_MS = 10_000;
/**
 * Most tombstones of each kind (ids, DIDs). Beyond it the oldest goes, and reads that
 * started before it was recorded are not cached: the bound costs cache hits, never safety.
 * @internal
 */
export const TOMBSTONE_MAX_ENTRIES = 10_000;

interface Entry<R> {
  readonly record: R;
  readonly until: number;
  /** Kept for the long lifetime: served only while {@link CacheTrust.stillTrusted}. */
  readonly long: boolean;
}

/**
 * A bounded LRU of records by id (a Map keeps insertion order: a hit moves its entry to the
 * end, the first entry is the least recently used), with a DID index so that a log out
 * everywhere drops a DID's entries without a scan, and the tombstones of revocations.
 *
 * Invariants, each tested (test/invalidation/revocable-cache.spec.ts):
 * - a record named by a live tombstone (its id, or its DID with a creation time up to the
 *   revocation) is refused and never cached;
 * - a record read by a store read that started before a revocation of its id or DID became
 *   known here (tombstone), or before the cache was last cleared, is not cached: the row
 *   may predate the revocation;
 * - an entry gets the long lifetime only if the trust grants it, and a long entry is served
 *   only while the trust holds.
 *
 * Times are `Date.now()` milliseconds, as everywhere in the services.
 * @internal
 */
export class RevocableCache<R extends CacheableRecord> {
  readonly #entries = new Map<string, Entry<R>>();
  readonly #byDid = new Map<string, Set<string>>();
  /** Revoked ids: when the revocation became known here. */
  readonly #ids = new Map<string, number>();
  /** Revoked DIDs (log out everywhere): the revocation's instant, and when it became known. */
  readonly #dids = new Map<string, { at: number; seenAt: number }>();
  /** Reads that started at or before this are not cached (cleared cache, dropped tombstones). */
  #horizon = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly settings: {
      /** `appSession.cacheTtl`; 0 turns the cache off. */
      readonly shortTtlMs: number;
      /** `appSession.invalidatedCacheTtl`; used only when longer than the short one. */
      readonly longTtlMs: number;
      readonly maxEntries: number;
      readonly trust?: CacheTrust;
    },
  ) {}

  /** Whether caching is on (`appSession.cacheTtl` > 0). */
  get enabled(): boolean {
    return this.settings.shortTtlMs > 0;
  }

  /** Entries held now (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }

  /** The cached record with id `id`, still fresh at `now`, or `undefined`. */
  get(id: string, now: number): R | undefined {
    const entry = this.#entries.get(id);
    if (entry === undefined) return undefined;
    if (entry.until <= now) {
      this.delete(id);
      return undefined;
    }
    // `stillTrusted` clears every cache (this one included) when the trust has lapsed.
    if (entry.long && !this.settings.trust?.stillTrusted(now)) {
      this.delete(id);
      return undefined;
    }
    // Most recently used: to the end of the eviction order.
    this.#entries.delete(id);
    this.#entries.set(id, entry);
    return entry.record;
  }

  /**
   * Whether a live tombstone names `record`: its id was revoked, or its DID was logged out
   * everywhere after the record was created. Such a record must be refused even if the row
   * just read says otherwise (it may have been read before the revocation landed).
   */
  revoked(record: R, now: number): boolean {
    const seenAt = this.#ids.get(record.id);
    if (seenAt !== undefined && seenAt + TOMBSTONE_TTL_MS > now) return true;
    const did = this.#dids.get(record.did);
    return (
      did !== undefined &&
      did.seenAt + TOMBSTONE_TTL_MS > now &&
      record.createdAt.getTime() <= did.at
    );
  }

  /**
   * Caches `record`, read by a store read that started at `startedAt` and ended at `now`,
   * unless a rule of the class forbids it. Its lifetime counts from `startedAt`.
   */
  put(record: R, startedAt: number, now: number): void {
    if (!this.enabled || startedAt <= this.#horizon || this.revoked(record, now)) return;
    // Started before a revocation of this id or DID was known here: the row may predate
    // it (expired tombstones count too: they are only forgotten through the horizon).
    const idSeenAt = this.#ids.get(record.id);
    if (idSeenAt !== undefined && startedAt <= idSeenAt) return;
    const did = this.#dids.get(record.did);
    if (did !== undefined && startedAt <= did.seenAt) return;
    const { shortTtlMs, longTtlMs, maxEntries, trust } = this.settings;
    const long = longTtlMs > shortTtlMs && trust?.grantLong(startedAt, now) === true;
    this.delete(record.id);
    this.#entries.set(record.id, {
      record,
      until: startedAt + (long ? longTtlMs : shortTtlMs),
      long,
    });
    let ids = this.#byDid.get(record.did);
    if (!ids) this.#byDid.set(record.did, (ids = new Set()));
    ids.add(record.id);
    while (this.#entries.size > maxEntries) {
      this.delete(this.#entries.keys().next().value as string);
    }
  }

  /** Drops the entry of `id`, if any (no tombstone). */
  delete(id: string): void {
    const entry = this.#entries.get(id);
    if (!entry) return;
    this.#entries.delete(id);
    const ids = this.#byDid.get(entry.record.did);
    ids?.delete(id);
    if (ids?.size === 0) this.#byDid.delete(entry.record.did);
  }

  /** `id` was revoked (here or elsewhere), known here at `now`: drop it and tombstone it. */
  revokeId(id: string, now: number): void {
    if (!this.enabled) return;
    this.delete(id);
    this.#ids.delete(id);
    this.#ids.set(id, now);
    this.#prune(this.#ids, (seenAt) => seenAt, now);
  }

  /**
   * Every record of `did` created up to `at` was revoked (log out everywhere), known here at
   * `now`: drop the DID's entries and tombstone it.
   */
  revokeDid(did: string, at: number, now: number): void {
    if (!this.enabled) return;
    for (const id of [...(this.#byDid.get(did) ?? [])]) this.delete(id);
    const previous = this.#dids.get(did);
    this.#dids.delete(did);
    this.#dids.set(did, { at: Math.max(at, previous?.at ?? at), seenAt: now });
    this.#prune(this.#dids, (t) => t.seenAt, now);
  }

  /** Drops every entry; reads that started up to `now` are not cached. */
  clear(now: number): void {
    this.#entries.clear();
    this.#byDid.clear();
    this.#horizon = Math.max(this.#horizon, now);
  }

  /**
   * Forgets expired tombstones and, beyond the bound, the oldest ones; reads that started
   * before a forgotten tombstone was recorded are then not cached (the horizon).
   */
  #prune<V>(map: Map<string, V>, seenAtOf: (value: V) => number, now: number): void {
    for (const [key, value] of map) {
      const seenAt = seenAtOf(value);
      if (seenAt + TOMBSTONE_TTL_MS > now && map.size <= TOMBSTONE_MAX_ENTRIES) break;
      map.delete(key);
      this.#horizon = Math.max(this.#horizon, seenAt);
    }
  }
}
