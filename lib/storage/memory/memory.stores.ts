import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import type {
  AppSessionRecord,
  AppSessionStore,
  AtProtoKeyValueStore,
  AtProtoStoreOptions,
} from '../store.interface.js';
import { assertSessionBelongsTo, assertValidDid, assertValidStateKey } from '../validation.js';

/**
 * In-memory key-value store with expiry, for tests and local development. Values are
 * copied in and out (as JSON), so callers never share objects with the store. Nothing
 * survives a restart and nothing is shared between instances.
 * @internal
 */
class MemoryKeyValueStore<V> implements AtProtoKeyValueStore<V> {
  readonly #entries = new Map<string, { json: string; expiresAt: number }>();
  readonly #now: () => number;

  constructor(
    private readonly options: AtProtoStoreOptions,
    private readonly validate: (key: string, value?: V) => void,
  ) {
    this.#now = options.now ?? Date.now;
  }

  async get(key: string): Promise<V | undefined> {
    this.validate(key);
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    const value = JSON.parse(entry.json) as V;
    this.validate(key, value);
    return value;
  }

  async set(key: string, value: V): Promise<void> {
    this.validate(key, value);
    this.#entries.set(key, {
      json: JSON.stringify(value),
      expiresAt: this.#now() + this.options.ttlMs,
    });
  }

  async del(key: string): Promise<void> {
    this.validate(key);
    this.#entries.delete(key);
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
 * In-memory OAuth session store (tests, development, a single instance).
 * @publicApi
 */
export class MemorySessionStore extends MemoryKeyValueStore<NodeSavedSession> {
  constructor(options: AtProtoStoreOptions) {
    super(options, (did, value) => {
      assertValidDid(did);
      if (value) assertSessionBelongsTo(did, value.tokenSet?.sub);
    });
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

  async listForDid(did: string): Promise<AppSessionRecord[]> {
    assertValidDid(did);
    return [...this.#rows.values()]
      .filter((r) => r.did === did && !r.revokedAt)
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())
      .map((r) => ({ ...r }));
  }
}
