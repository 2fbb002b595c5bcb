import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import type {
  AppSessionRecord,
  AppSessionStore,
  AtProtoKeyValueStore,
  AtProtoOAuthSessionInfo,
  AtProtoSessionInfoStore,
  AtProtoStoreOptions,
  AtProtoVersionedSessionStore,
  VersionedSession,
} from '../store.interface.js';
import { assertSessionVersion, firstSessionVersion } from '../session-version.js';
import { assertSessionBelongsTo, assertValidDid, assertValidStateKey } from '../validation.js';
import { revokedAfter } from './memory-api-key.store.js';

/**
 * In-memory key-value store with expiry, for tests and local development. Values are
 * copied in and out (as JSON), so callers never share objects with the store. Nothing
 * survives a restart and nothing is shared between instances.
 * @internal
 */
class MemoryKeyValueStore<V> implements AtProtoKeyValueStore<V> {
  readonly #entries = new Map<
    string,
    { json: string; expiresAt: number; version: number; createdAt: number; updatedAt: number }
  >();
  readonly #now: () => number;

  constructor(
    private readonly options: AtProtoStoreOptions,
    private readonly validate: (key: string, value?: V) => void,
  ) {
    this.#now = options.now ?? Date.now;
  }

  async get(key: string): Promise<V | undefined> {
    return (await this.readVersioned(key))?.value;
  }

  /** The value with its version and last write, or `undefined`. */
  protected async readVersioned(
    key: string,
  ): Promise<{ value: V; version: number; updatedAt: Date } | undefined> {
    const read = this.readEntry(key);
    return read && { value: read.value, version: read.version, updatedAt: read.updatedAt };
  }

  /** The value with its version, expiry and write times, or `undefined`. */
  protected readEntry(
    key: string,
  ): { value: V; version: number; expiresAt: Date; createdAt: Date; updatedAt: Date } | undefined {
    this.validate(key);
    const entry = this.#live(key);
    if (!entry) return undefined;
    const value = JSON.parse(entry.json) as V;
    this.validate(key, value);
    return {
      value,
      version: entry.version,
      expiresAt: new Date(entry.expiresAt),
      createdAt: new Date(entry.createdAt),
      updatedAt: new Date(entry.updatedAt),
    };
  }

  async set(key: string, value: V): Promise<void> {
    this.validate(key, value);
    this.#write(key, value);
  }

  /** Replaces the value only if its version is `version`; resolves the new version. */
  protected async writeIfVersion(
    key: string,
    value: V,
    version: number,
  ): Promise<number | undefined> {
    this.validate(key, value);
    assertSessionVersion(version);
    if (this.#live(key)?.version !== version) return undefined;
    return this.#write(key, value);
  }

  async del(key: string): Promise<void> {
    this.validate(key);
    this.#entries.delete(key);
  }

  /** Deletes the value only if its version is `version`. */
  protected async deleteIfVersion(key: string, version: number): Promise<boolean> {
    this.validate(key);
    assertSessionVersion(version);
    if (this.#entries.get(key)?.version !== version) return false;
    this.#entries.delete(key);
    return true;
  }

  /** Every key held, expired ones included. @internal */
  keys(): string[] {
    return [...this.#entries.keys()];
  }

  #live(key: string) {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry;
  }

  #write(key: string, value: V): number {
    const now = this.#now();
    const current = this.#live(key);
    const version = current ? current.version + 1 : firstSessionVersion(now);
    this.#entries.set(key, {
      json: JSON.stringify(value),
      expiresAt: now + this.options.ttlMs,
      version,
      createdAt: current?.createdAt ?? now,
      updatedAt: now,
    });
    return version;
  }

  /** Deletes entries expired at `now`; resolves how many. */
  async deleteExpired(now = this.#now()): Promise<number> {
    let n = 0;
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAt <= now) {
        this.#entries.delete(key);
        n++;
      }
    }
    return n;
  }
}

/**
 * In-memory OAuth state store (tests, development, a single instance).
 * @publicApi
 */
export class MemoryStateStore extends MemoryKeyValueStore<NodeSavedState> {
  constructor(options: AtProtoStoreOptions) {
    super(options, (key) => assertValidStateKey(key));
  }
}

/**
 * In-memory OAuth session store (tests, development, a single instance), with the fenced
 * writes of {@link AtProtoVersionedSessionStore} and the `getInfo` of
 * {@link AtProtoSessionInfoStore}.
 * @publicApi
 */
export class MemorySessionStore
  extends MemoryKeyValueStore<NodeSavedSession>
  implements AtProtoVersionedSessionStore, AtProtoSessionInfoStore
{
  constructor(options: AtProtoStoreOptions) {
    super(options, (did, value) => {
      assertValidDid(did);
      if (value) assertSessionBelongsTo(did, value.tokenSet?.sub);
    });
  }

  getVersioned(did: string): Promise<VersionedSession | undefined> {
    return this.readVersioned(did);
  }

  setIfVersion(did: string, value: NodeSavedSession, version: number): Promise<number | undefined> {
    return this.writeIfVersion(did, value, version);
  }

  delIfVersion(did: string, version: number): Promise<boolean> {
    return this.deleteIfVersion(did, version);
  }

  async getInfo(did: string): Promise<AtProtoOAuthSessionInfo | undefined> {
    const read = this.readEntry(did);
    if (!read) return undefined;
    const { tokenSet } = read.value;
    return {
      did,
      issuer: tokenSet.iss,
      pdsUrl: tokenSet.aud,
      accessExpiresAt: tokenSet.expires_at ? new Date(tokenSet.expires_at) : null,
      expiresAt: read.expiresAt,
      createdAt: read.createdAt,
      updatedAt: read.updatedAt,
    };
  }
}

/**
 * In-memory app session store (tests, development, a single instance).
 * @publicApi
 */
export class MemoryAppSessionStore implements AppSessionStore {
  readonly #rows = new Map<string, AppSessionRecord>();

  async create(record: AppSessionRecord): Promise<void> {
    assertValidDid(record.did);
    if (this.#rows.has(record.id)) {
      throw new AtProtoStoreError('An app session with this id already exists.');
    }
    this.#rows.set(record.id, { ...record, userAgent: record.userAgent?.slice(0, 512) ?? null });
  }

  async get(id: string): Promise<AppSessionRecord | undefined> {
    const row = this.#rows.get(id);
    return row ? { ...row } : undefined;
  }

  async touch(id: string, at: Date): Promise<void> {
    const row = this.#rows.get(id);
    if (row) row.lastSeenAt = at;
  }

  async revoke(id: string, at: Date): Promise<boolean> {
    const row = this.#rows.get(id);
    if (!row || row.revokedAt) return false;
    row.revokedAt = at;
    return true;
  }

  async revokeAllForDid(did: string, at: Date): Promise<number> {
    assertValidDid(did);
    let n = 0;
    for (const row of this.#rows.values()) {
      if (row.did === did && !row.revokedAt) {
        row.revokedAt = at;
        n++;
      }
    }
    return n;
  }

  /** Deletes ended sessions (expired, idle, revoked before the grace cutoff). */
  async deleteEnded(
    cutoffs: { now: number; idleBefore: number; revokedBefore: number },
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }> {
    const dids = new Set<string>();
    let deleted = 0;
    for (const [id, r] of this.#rows) {
      if (deleted >= batchSize) break;
      if (
        r.expiresAt.getTime() < cutoffs.now ||
        r.lastSeenAt.getTime() < cutoffs.idleBefore ||
        (r.revokedAt !== null && r.revokedAt.getTime() < cutoffs.revokedBefore)
      ) {
        this.#rows.delete(id);
        dids.add(r.did);
        deleted++;
      }
    }
    return { deleted, dids: [...dids] };
  }

  async revokedSince(
    since: Date,
    limit: number,
  ): Promise<Array<{ id: string; did: string; revokedAt: Date }>> {
    return revokedAfter(this.#rows.values(), since, limit);
  }

  async listForDid(did: string): Promise<AppSessionRecord[]> {
    assertValidDid(did);
    return [...this.#rows.values()]
      .filter((r) => r.did === did && !r.revokedAt)
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())
      .map((r) => ({ ...r }));
  }
}
