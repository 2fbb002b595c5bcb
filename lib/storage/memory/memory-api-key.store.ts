import type { AtProtoApiKeyRecord, AtProtoApiKeyStore } from '../../api-keys/api-key.store.js';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import { assertValidDid } from '../validation.js';

/**
 * In-memory API key store (tests, development, a single instance).
 * @publicApi
 */
export class MemoryApiKeyStore implements AtProtoApiKeyStore {
  readonly #rows = new Map<string, AtProtoApiKeyRecord>();

  async create(record: AtProtoApiKeyRecord): Promise<void> {
    assertValidDid(record.did);
    if (this.#rows.has(record.id)) {
      throw new AtProtoStoreError('An API key with this id already exists.');
    }
    this.#rows.set(record.id, copy(record));
  }

  async get(id: string): Promise<AtProtoApiKeyRecord | undefined> {
    const row = this.#rows.get(id);
    return row ? copy(row) : undefined;
  }

  async listForDid(did: string): Promise<AtProtoApiKeyRecord[]> {
    assertValidDid(did);
    return [...this.#rows.values()]
      .filter((r) => r.did === did)
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())
      .map(copy);
  }

  async revoke(id: string, did: string, at: Date): Promise<boolean> {
    const row = this.#rows.get(id);
    if (!row || row.did !== did || row.revokedAt !== null) return false;
    row.revokedAt = at;
    return true;
  }

  async touch(id: string, at: Date, staleBefore: Date): Promise<boolean> {
    const row = this.#rows.get(id);
    if (!row) return false;
    if (row.lastUsedAt !== null && row.lastUsedAt.getTime() >= staleBefore.getTime()) return false;
    row.lastUsedAt = at;
    return true;
  }

  async hasActive(did: string, now: Date): Promise<boolean> {
    for (const r of this.#rows.values()) {
      if (r.did === did && isActive(r, now.getTime())) return true;
    }
    return false;
  }

  async revokedSince(
    since: Date,
    limit: number,
  ): Promise<Array<{ id: string; did: string; revokedAt: Date }>> {
    return revokedAfter(this.#rows.values(), since, limit);
  }

  /**
   * Deletes up to `batchSize` keys revoked or expired before `endedBefore` (cleanup);
   * returns how many and the DIDs they belonged to.
   * @internal
   */
  async deleteEnded(
    endedBefore: number,
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }> {
    const dids = new Set<string>();
    let deleted = 0;
    for (const [id, r] of this.#rows) {
      if (deleted >= batchSize) break;
      if (
        (r.revokedAt !== null && r.revokedAt.getTime() < endedBefore) ||
        (r.expiresAt !== null && r.expiresAt.getTime() < endedBefore)
      ) {
        this.#rows.delete(id);
        dids.add(r.did);
        deleted++;
      }
    }
    return { deleted, dids: [...dids] };
  }
}

/**
 * The rows revoked after `since`, oldest revocation first, at most `limit`. A scan: the
 * memory stores serve one process and tests, not the table sizes an index is for.
 * @internal
 */
export function revokedAfter(
  rows: Iterable<{ id: string; did: string; revokedAt: Date | null }>,
  since: Date,
  limit: number,
): Array<{ id: string; did: string; revokedAt: Date }> {
  const found: Array<{ id: string; did: string; revokedAt: Date }> = [];
  for (const r of rows) {
    if (r.revokedAt !== null && r.revokedAt.getTime() > since.getTime()) {
      found.push({ id: r.id, did: r.did, revokedAt: new Date(r.revokedAt.getTime()) });
    }
  }
  return found.sort((a, b) => a.revokedAt.getTime() - b.revokedAt.getTime()).slice(0, limit);
}

function isActive(r: AtProtoApiKeyRecord, now: number): boolean {
  return r.revokedAt === null && (r.expiresAt === null || r.expiresAt.getTime() > now);
}

function copy(r: AtProtoApiKeyRecord): AtProtoApiKeyRecord {
  return { ...r, scopes: r.scopes ? [...r.scopes] : null };
}
