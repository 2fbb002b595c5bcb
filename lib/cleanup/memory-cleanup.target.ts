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

  async didsWithoutActiveAppSession(
    dids: string[],
    cutoffs: { now: number; idleBefore: number },
  ): Promise<string[]> {
    const out: string[] = [];
    for (const did of dids) {
      const active = (await this.appSessions.listForDid(did)).some(
        (r) => r.expiresAt.getTime() > cutoffs.now && r.lastSeenAt.getTime() > cutoffs.idleBefore,
      );
      if (!active) out.push(did);
    }
    return out;
  }
}
