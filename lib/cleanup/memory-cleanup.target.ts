import type { MemoryApiKeyStore } from '../storage/memory/memory-api-key.store.js';
import type {
  MemoryAppSessionStore,
  MemorySessionStore,
  MemoryStateStore,
} from '../storage/memory/memory.stores.js';
import type { CleanupTarget } from './cleanup.interface.js';

/** Cleanup of the in-memory stores (one process; no batching needed). @internal */
export class MemoryCleanupTarget implements CleanupTarget {
  constructor(
    private readonly states: MemoryStateStore,
    private readonly sessions: MemorySessionStore,
    private readonly appSessions: MemoryAppSessionStore,
    /**
     * The API key store the module's `AtProtoApiKeyService` uses: its active keys keep their
     * DIDs' OAuth sessions. Without one, no DID has a key.
     */
    private readonly apiKeys?: MemoryApiKeyStore,
  ) {}

  deleteExpiredStates(now: number): Promise<number> {
    return this.states.deleteExpired(now);
  }

  deleteExpiredOAuthSessions(now: number): Promise<number> {
    return this.sessions.deleteExpired(now);
  }

  deleteEndedAppSessions(
    cutoffs: { now: number; idleBefore: number; revokedBefore: number },
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }> {
    return this.appSessions.deleteEnded(cutoffs, batchSize);
  }

  async deleteEndedApiKeys(
    endedBefore: number,
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }> {
    return (await this.apiKeys?.deleteEnded(endedBefore, batchSize)) ?? { deleted: 0, dids: [] };
  }

  async didsWithoutActiveAppSession(
    dids: string[],
    cutoffs: { now: number; idleBefore: number },
  ): Promise<string[]> {
    const out: string[] = [];
    for (const did of dids) {
      if (!(await this.#hasActive(did, cutoffs))) out.push(did);
    }
    return out;
  }

  isInUse(did: string, cutoffs: { now: number; idleBefore: number }): Promise<boolean> {
    return this.#hasActive(did, cutoffs);
  }

  async didsWithOAuthSession(dids: string[]): Promise<string[]> {
    // In process: the store's own reads (and its own clock for the retention).
    const out: string[] = [];
    for (const did of dids) {
      if ((await this.sessions.get(did)) !== undefined) out.push(did);
    }
    return out;
  }

  async oauthSessionsWithoutActiveAppSession(
    cutoffs: { now: number; idleBefore: number },
    afterDid: string | undefined,
    limit: number,
  ): Promise<string[]> {
    // DIDs are ASCII, so the default sort is byte order, as keyset pagination needs.
    const dids = this.sessions
      .keys()
      .filter((did) => afterDid === undefined || did > afterDid)
      .sort();
    const out: string[] = [];
    for (const did of dids) {
      if (out.length >= limit) break;
      if (!(await this.#hasActive(did, cutoffs))) out.push(did);
    }
    return out;
  }

  /**
   * Whether `did`'s OAuth session is in use: an app session that is not revoked, expired or
   * idle, or an API key that is not revoked or expired.
   */
  async #hasActive(did: string, cutoffs: { now: number; idleBefore: number }): Promise<boolean> {
    const session = (await this.appSessions.listForDid(did)).some(
      (r) => r.expiresAt.getTime() > cutoffs.now && r.lastSeenAt.getTime() > cutoffs.idleBefore,
    );
    return session || ((await this.apiKeys?.hasActive(did, new Date(cutoffs.now))) ?? false);
  }
}
