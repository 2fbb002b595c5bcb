import { Inject, Injectable, Logger, Optional } from '@nestjs/common';
import { AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { AtProtoBadRequestError } from '../errors/at-proto-http.errors.js';
import { describeError } from '../errors/describe-error.js';
import { AtProtoCacheInvalidation } from '../invalidation/cache-invalidation.js';
import { RevocableCache } from '../invalidation/revocable-cache.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { AT_PROTO_API_KEY_STORE } from './api-key.constants.js';
import { apiKeyIdOf, generateApiKey, isWellFormedApiKey } from './api-key-format.js';
import type { AtProtoApiKeyRecord, AtProtoApiKeyStore } from './api-key.store.js';

/** An API key id: the SHA-256 of the key, lowercase hex. */
const KEY_ID = /^[0-9a-f]{64}$/;
/** Longest key name, in UTF-16 code units (the column holds 100 characters). */
const NAME_MAX_LENGTH = 100;
// Characters a name must not hold: it is shown in UIs and may reach log lines. C0 and C1
// controls and DEL (line breaks forge log entries), U+2028/U+2029 (line breaks for JSON-lines
// readers), bidirectional controls and marks (they reorder what a reader sees), and lone
// surrogates (not encodable in UTF-8).
const NAME_FORBIDDEN = /[\p{Cc}\p{Cs}\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/u;
/** A scope: what a route may require of a key (`feed:read`, `posts/write`). */
const SCOPE_SYNTAX = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$/;
const SCOPES_MAX = 16;

/**
 * An API key as its owner sees it: never the key itself.
 * @publicApi
 */
export interface AtProtoApiKeyInfo {
  /** Stable id (the SHA-256 of the key): safe to show, and what `revoke` takes. */
  readonly id: string;
  /** The DID the key acts as. */
  readonly did: string;
  readonly name: string;
  /** The configured prefix and the key's first 8 random characters, e.g. `atp_4fZq81Xb`. */
  readonly displayPrefix: string;
  /** Scopes the key is narrowed to, or `null` when it is not (see {@link apiKeyHasScopes}). */
  readonly scopes: readonly string[] | null;
  readonly createdAt: Date;
  /** When it stops working, or `null` if it does not expire. */
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  /** Last use, to within `apiKeys.lastUsedInterval`; `null` if never used. */
  readonly lastUsedAt: Date | null;
  /** Whether the key works now: not revoked, not expired. */
  readonly active: boolean;
}

/**
 * What {@link AtProtoApiKeyService.create} takes.
 * @publicApi
 */
export interface AtProtoApiKeyCreateOptions {
  /** A name for the owner's list (1 to 100 characters, no control characters). */
  name: string;
  /** When the key stops working; in the future. Omit for a key that does not expire. */
  expiresAt?: Date;
  /**
   * Narrows the key to these scopes (at most 16, each 1 to 64 of `A-Z a-z 0-9 . _ : / -`,
   * starting with a letter or digit); routes that require a scope refuse a key without it.
   * Omit for a key that is not narrowed.
   */
  scopes?: string[];
}

/**
 * Whether a key may use a route that requires `required` scopes: a key that is not narrowed
 * (`scopes: null`) may, a narrowed key only if it has every one of them.
 * @publicApi
 */
export function apiKeyHasScopes(
  key: Pick<AtProtoApiKeyInfo, 'scopes'>,
  required: readonly string[],
): boolean {
  const scopes = key.scopes;
  return scopes === null || required.every((s) => scopes.includes(s));
}

/**
 * API keys for bots and services: a key acts as the DID that created it. The key is shown
 * once, at creation; only its SHA-256 is stored, with a display prefix. Keys can be listed
 * and revoked by their owner, expire if asked to, and record their last use at most once
 * per `apiKeys.lastUsedInterval`. An active key keeps its DID's OAuth session alive
 * (cleanup does not revoke it).
 * @publicApi
 */
@Injectable()
export class AtProtoApiKeyService {
  readonly #logger = new Logger('AtProtoApiKeys');
  // Why a cache: the guard validates the key on every request, and a database read per
  // request costs more than a typical route. The same cache as app sessions (RevocableCache):
  // entries live `appSession.cacheTtl` (2 s by default, 0 turns it off), or
  // `appSession.invalidatedCacheTtl` while revocations made on other instances are known to
  // reach this one (AtProtoCacheInvalidation); a revocation through this instance drops the
  // entry at once and is published to the others. Only keys found in the store are cached,
  // so made-up keys cannot fill it. Tombstones of revocations keep a validation whose store
  // read was in flight from caching (and accepting) what it read before.
  readonly #cache: RevocableCache<AtProtoApiKeyRecord>;
  // Store reads under way (cache on): concurrent requests with one key share one read.
  readonly #reading = new Map<string, Promise<AtProtoApiKeyRecord | undefined>>();
  // Keys whose last-used write is under way: one write at a time per key from this instance.
  readonly #touching = new Set<string>();

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    @Inject(AT_PROTO_API_KEY_STORE) private readonly store: AtProtoApiKeyStore,
    @Optional() private readonly invalidation?: AtProtoCacheInvalidation,
  ) {
    const { cacheTtlMs, cacheMaxEntries, invalidatedCacheTtlMs } = options.appSession;
    this.#cache = new RevocableCache({
      shortTtlMs: cacheTtlMs,
      longTtlMs: invalidatedCacheTtlMs ?? cacheTtlMs,
      maxEntries: cacheMaxEntries,
      trust: invalidation,
    });
    invalidation?.listen({
      invalidated: (event, now) => {
        if (event.kind === 'key') this.#cache.revokeId(event.id, now);
      },
      dropAll: (now) => this.#cache.clear(now),
    });
  }

  /**
   * Creates a key acting as `did`. Resolves the key, to hand to the user now (it is not
   * stored, logged or retrievable later), and its info.
   * @throws AtProtoBadRequestError when a name, expiry or scope is not acceptable (the
   *   message says which and is safe to show); nothing is stored then.
   */
  async create(
    did: string,
    options: AtProtoApiKeyCreateOptions,
  ): Promise<{ key: string; info: AtProtoApiKeyInfo }> {
    const now = Date.now();
    const { name, expiresAt, scopes } = checkCreateOptions(options, now);
    const { key, id, displayPrefix } = generateApiKey(this.options.apiKeys.prefix);
    const record: AtProtoApiKeyRecord = {
      id,
      did,
      name,
      displayPrefix,
      scopes,
      createdAt: new Date(now),
      expiresAt,
      revokedAt: null,
      lastUsedAt: null,
    };
    await this.store.create(record);
    return { key, info: toInfo(record, now) };
  }

  /**
   * The guard's synchronous path: the active record of `key` if this instance's cache holds
   * it (use recorded like {@link validate}); `undefined` when only the store can tell (or the
   * key is malformed): then call `validate`. A hit costs no promise and no copy.
   * @internal
   */
  cachedActive(key: string): AtProtoApiKeyRecord | undefined {
    if (!this.#cache.enabled || !isWellFormedApiKey(key, this.options.apiKeys.prefix)) {
      return undefined;
    }
    const now = Date.now();
    const record = this.#cache.get(apiKeyIdOf(key), now);
    if (record === undefined || !isActive(record, now)) return undefined;
    this.#recordUse(record, now);
    return record;
  }

  /**
   * The active key `key` is, or `undefined` when it is malformed, fails its checksum (no
   * store read then), is unknown, revoked or expired. Records the use at most once per
   * `apiKeys.lastUsedInterval`, without making the caller wait for that write.
   */
  async validate(key: string): Promise<AtProtoApiKeyInfo | undefined> {
    if (!isWellFormedApiKey(key, this.options.apiKeys.prefix)) return undefined;
    const id = apiKeyIdOf(key);
    const now = Date.now();
    const record = await this.#lookup(id, now);
    if (!record || !isActive(record, now)) return undefined;
    this.#recordUse(record, now);
    return toInfo(record, now);
  }

  /**
   * The keys of `did`, newest first: the active ones, and those revoked or expired within
   * the last `apiKeys.revokedGrace` (cleanup deletes them after that).
   */
  async list(did: string): Promise<AtProtoApiKeyInfo[]> {
    const now = Date.now();
    const since = now - this.options.apiKeys.revokedGraceMs;
    return (await this.store.listForDid(did))
      .filter((r) => {
        const ended = endOf(r, now);
        return ended === undefined || ended >= since;
      })
      .map((r) => toInfo(r, now));
  }

  /**
   * Revokes key `id` of `owner.did`; resolves `true` if this call revoked it. A key of
   * another DID, an unknown id or a key already revoked is left alone and resolves `false`:
   * ids come from requests, and a user must not end another user's key.
   *
   * @example
   * // DELETE /api-keys/:id, behind AtProtoAuthGuard
   * await apiKeys.revoke(params.id, { did: auth.did });
   */
  async revoke(id: string, owner: { did: string }): Promise<boolean> {
    if (typeof id !== 'string' || !KEY_ID.test(id)) return false;
    // One conditional write (id, owner and "not revoked yet"): no read-then-write race.
    const revoked = await this.store.revoke(id, owner.did, new Date());
    if (revoked) {
      this.#cache.revokeId(id, Date.now());
      // After the write: an instance that hears of it and reads the row sees it revoked.
      this.invalidation?.publish({ kind: 'key', id });
    }
    return revoked;
  }

  /** Whether `did` has an active key (one that keeps its OAuth session in use). */
  hasActive(did: string): Promise<boolean> {
    return this.store.hasActive(did, new Date());
  }

  #recordUse(record: AtProtoApiKeyRecord, now: number): void {
    const staleBefore = now - this.options.apiKeys.lastUsedIntervalMs;
    if (record.lastUsedAt !== null && record.lastUsedAt.getTime() >= staleBefore) return;
    if (this.#touching.has(record.id)) return;
    this.#touching.add(record.id);
    // Noted on the (possibly cached) record first, so this instance does not try again
    // within the interval; the store's conditional write makes the instances together write
    // once per interval. Not awaited: a failed write only leaves `lastUsedAt` older.
    record.lastUsedAt = new Date(now);
    this.store
      .touch(record.id, new Date(now), new Date(staleBefore))
      .catch((error: unknown) => {
        this.#logger.warn(`Could not record the last use of an API key: ${describeError(error)}`);
      })
      .finally(() => this.#touching.delete(record.id));
  }

  #lookup(id: string, now: number): Promise<AtProtoApiKeyRecord | undefined> {
    if (!this.#cache.enabled) return this.store.get(id);
    const cached = this.#cache.get(id, now);
    if (cached) return Promise.resolve(cached);
    let reading = this.#reading.get(id);
    if (!reading) {
      reading = this.#read(id).finally(() => this.#reading.delete(id));
      this.#reading.set(id, reading);
    }
    return reading;
  }

  async #read(id: string): Promise<AtProtoApiKeyRecord | undefined> {
    const startedAt = Date.now();
    const record = await this.store.get(id);
    if (!record) return undefined;
    const now = Date.now();
    // Revoked here or reported from elsewhere while the read was under way: the row may
    // have been read just before the revocation landed.
    if (this.#cache.revoked(record, now)) return undefined;
    this.#cache.put(record, startedAt, now);
    return record;
  }
}

function isActive(r: AtProtoApiKeyRecord, now: number): boolean {
  return r.revokedAt === null && (r.expiresAt === null || r.expiresAt.getTime() > now);
}

/** When the key stopped working (revoked or expired), or `undefined` while it works. */
function endOf(r: AtProtoApiKeyRecord, now: number): number | undefined {
  const ends = [r.revokedAt?.getTime(), r.expiresAt?.getTime()].filter(
    (t): t is number => t !== undefined && t <= now,
  );
  return ends.length > 0 ? Math.min(...ends) : undefined;
}

function toInfo(r: AtProtoApiKeyRecord, now: number): AtProtoApiKeyInfo {
  return {
    id: r.id,
    did: r.did,
    name: r.name,
    displayPrefix: r.displayPrefix,
    scopes: r.scopes ? [...r.scopes] : null,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    revokedAt: r.revokedAt,
    lastUsedAt: r.lastUsedAt,
    active: isActive(r, now),
  };
}

/** The create options checked, or an AtProtoBadRequestError saying what is wrong. */
function checkCreateOptions(
  options: AtProtoApiKeyCreateOptions,
  now: number,
): { name: string; expiresAt: Date | null; scopes: string[] | null } {
  // Checked as unknown input: the options often come straight from a request body.
  const raw: { name?: unknown; expiresAt?: unknown; scopes?: unknown } = options ?? {};
  const { name, expiresAt, scopes } = raw;
  if (
    typeof name !== 'string' ||
    name.trim() === '' ||
    name.length > NAME_MAX_LENGTH ||
    NAME_FORBIDDEN.test(name)
  ) {
    throw new AtProtoBadRequestError(
      `An API key needs a name of 1 to ${NAME_MAX_LENGTH} characters, not only spaces, without control characters.`,
    );
  }
  let expires: Date | null = null;
  if (expiresAt !== undefined) {
    if (!(expiresAt instanceof Date) || Number.isNaN(expiresAt.getTime())) {
      throw new AtProtoBadRequestError(
        'expiresAt must be a valid Date (or omitted for a key that does not expire).',
      );
    }
    if (expiresAt.getTime() <= now) {
      throw new AtProtoBadRequestError('expiresAt must be in the future.');
    }
    expires = new Date(expiresAt.getTime());
  }
  let narrowed: string[] | null = null;
  if (scopes !== undefined) {
    if (
      !Array.isArray(scopes) ||
      !scopes.every((s): s is string => typeof s === 'string' && SCOPE_SYNTAX.test(s))
    ) {
      throw new AtProtoBadRequestError(
        'scopes must be an array of scope names, each 1 to 64 of A-Z a-z 0-9 . _ : / - starting with a letter or digit.',
      );
    }
    narrowed = [...new Set(scopes)];
    if (narrowed.length > SCOPES_MAX) {
      throw new AtProtoBadRequestError(`scopes may list at most ${SCOPES_MAX} scopes.`);
    }
  }
  return { name, expiresAt: expires, scopes: narrowed };
}
