import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import type {
  NativeCodeRecord,
  NativeRefreshFamilyRecord,
  NativeTokenStore,
} from '../../native/native-store.interface.js';
import type { AppSessionStore } from '../store.interface.js';
import { assertValidDid } from '../validation.js';

/**
 * Native one-time codes and refresh-token families in memory (tests, development, one
 * instance). Each operation runs without awaiting between its check and its change, so it
 * is as atomic within the process as the TypeORM store's conditional UPDATEs are across
 * instances.
 * @internal
 */
export class MemoryNativeStore implements NativeTokenStore {
  readonly #codes = new Map<string, NativeCodeRecord>();
  readonly #families = new Map<string, NativeRefreshFamilyRecord>();
  readonly #appSessions: Pick<AppSessionStore, 'get'> | undefined;

  /**
   * @param options.appSessions the app-session store, so that cleanup deletes the families
   * of app sessions it has deleted (without it, those go when they expire)
   */
  constructor(options: { appSessions?: Pick<AppSessionStore, 'get'> } = {}) {
    this.#appSessions = options.appSessions;
  }

  async createCode(record: NativeCodeRecord): Promise<void> {
    assertValidDid(record.did);
    if (this.#codes.has(record.id)) {
      throw new AtProtoStoreError('A native login code with this id already exists.');
    }
    this.#codes.set(record.id, { ...record });
  }

  async consumeCode(
    id: string,
    binding: { codeChallenge: string; redirectUri: string },
    at: Date,
  ): Promise<NativeCodeRecord | undefined> {
    const row = this.#codes.get(id);
    if (
      !row ||
      row.usedAt !== null ||
      row.expiresAt.getTime() <= at.getTime() ||
      row.codeChallenge !== binding.codeChallenge ||
      row.redirectUri !== binding.redirectUri
    ) {
      return undefined;
    }
    row.usedAt = at;
    return { ...row };
  }

  async hasPendingCode(did: string, now: Date): Promise<boolean> {
    assertValidDid(did);
    for (const row of this.#codes.values()) {
      if (row.did === did && row.usedAt === null && row.expiresAt.getTime() > now.getTime()) {
        return true;
      }
    }
    return false;
  }

  async deleteExpiredCodes(now: number, batchSize: number): Promise<number> {
    let deleted = 0;
    for (const [id, row] of this.#codes) {
      if (deleted >= batchSize) break;
      if (row.expiresAt.getTime() < now) {
        this.#codes.delete(id);
        deleted++;
      }
    }
    return deleted;
  }

  async createFamily(record: NativeRefreshFamilyRecord): Promise<void> {
    assertValidDid(record.did);
    if (this.#families.has(record.id)) {
      throw new AtProtoStoreError('A native refresh-token family with this id already exists.');
    }
    this.#families.set(record.id, { ...record });
  }

  async getFamily(id: string): Promise<NativeRefreshFamilyRecord | undefined> {
    const row = this.#families.get(id);
    return row ? { ...row } : undefined;
  }

  async rotateFamily(
    id: string,
    presentedJti: string,
    nextJti: string,
    at: Date,
  ): Promise<boolean> {
    const row = this.#families.get(id);
    if (!row || row.revokedAt !== null || row.currentJti !== presentedJti) return false;
    row.previousJti = presentedJti;
    row.currentJti = nextJti;
    row.rotatedAt = at;
    return true;
  }

  async revokeFamily(id: string, at: Date): Promise<boolean> {
    const row = this.#families.get(id);
    if (!row || row.revokedAt !== null) return false;
    row.revokedAt = at;
    return true;
  }

  async deleteEndedFamilies(
    cutoffs: { now: number; revokedBefore: number },
    batchSize: number,
  ): Promise<number> {
    let deleted = 0;
    for (const [id, row] of [...this.#families]) {
      if (deleted >= batchSize) break;
      const ended =
        row.expiresAt.getTime() < cutoffs.now ||
        (row.revokedAt !== null && row.revokedAt.getTime() < cutoffs.revokedBefore) ||
        (this.#appSessions !== undefined && (await this.#appSessions.get(id)) === undefined);
      if (ended && this.#families.get(id) === row) {
        this.#families.delete(id);
        deleted++;
      }
    }
    return deleted;
  }
}
