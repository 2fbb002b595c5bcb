/**
 * AppSessionService and AtProtoApiKeyService with an invalidation path (a stand-in here):
 * what they publish and when, and what a cache that may live minutes must not get wrong.
 */
import { jest } from '@jest/globals';
import type { AtProtoCacheInvalidation } from '../../lib/invalidation/cache-invalidation.js';
import type { InvalidationEvent } from '../../lib/invalidation/invalidation-message.js';
import { AtProtoApiKeyService } from '../../lib/api-keys/api-key.service.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import { AppSessionService } from '../../lib/session/app-session.service.js';
import { MemoryApiKeyStore } from '../../lib/storage/memory/memory-api-key.store.js';
import { MemoryAppSessionStore } from '../../lib/storage/memory/memory.stores.js';
import type { AppSessionRecord } from '../../lib/storage/store.interface.js';

const MINUTE = 60_000;
const DID = 'did:plc:services234567abcdefghijk';

/** Always trusted; records what is published and whether it came after the write. */
class StandInInvalidation {
  published: Array<{ event: InvalidationEvent; writes: number }> = [];
  constructor(private readonly writes: () => number) {}
  listen(): void {}
  grantLong(): boolean {
    return true;
  }
  stillTrusted(): boolean {
    return true;
  }
  publish(event: InvalidationEvent): void {
    this.published.push({ event, writes: this.writes() });
  }
}

class CountingStore extends MemoryAppSessionStore {
  reads = 0;
  writes = 0;
  override async get(id: string): Promise<AppSessionRecord | undefined> {
    this.reads++;
    return super.get(id);
  }
  override async revoke(id: string, at: Date): Promise<boolean> {
    const done = await super.revoke(id, at);
    this.writes++;
    return done;
  }
  override async revokeAllForDid(did: string, at: Date): Promise<number> {
    const n = await super.revokeAllForDid(did, at);
    this.writes++;
    return n;
  }
}

function options(idleTtlMs = 5 * MINUTE): ResolvedAtProtoOptions {
  return {
    appSession: {
      idleTtlMs,
      absoluteTtlMs: 30 * 24 * 60 * MINUTE,
      cacheTtlMs: 2000,
      cacheMaxEntries: 1000,
      invalidatedCacheTtlMs: 30 * MINUTE,
    },
    apiKeys: { prefix: 'atp_', lastUsedIntervalMs: 60 * MINUTE, revokedGraceMs: 24 * 60 * MINUTE },
  } as unknown as ResolvedAtProtoOptions;
}

function sessions(store: CountingStore, bus: StandInInvalidation, o = options()) {
  return new AppSessionService(o, store, bus as unknown as AtProtoCacheInvalidation);
}

describe('with an invalidation path', () => {
  beforeEach(() => {
    jest.useFakeTimers({
      now: new Date('2026-11-24T10:00:00Z'),
      doNotFake: ['nextTick', 'setImmediate'],
    });
  });
  afterEach(() => jest.useRealTimers());

  it('publishes a revocation after its write, and only when it ended something', async () => {
    const store = new CountingStore();
    const bus = new StandInInvalidation(() => store.writes);
    const s = sessions(store, bus);
    const one = await s.create(DID);
    await s.create(DID);
    expect(await s.revoke(one.session.id)).toBe(true);
    expect(await s.revoke(one.session.id)).toBe(false); // already revoked: nothing to say
    expect(await s.revokeAll(DID)).toBe(1);
    expect(await s.revokeAll(DID)).toBe(0);
    expect(bus.published).toEqual([
      { event: { kind: 'session', id: one.session.id }, writes: 1 },
      { event: { kind: 'did', did: DID, at: Date.now() }, writes: 3 },
    ]);

    const keyStore = new MemoryApiKeyStore();
    const keys = new AtProtoApiKeyService(
      options(),
      keyStore,
      bus as unknown as AtProtoCacheInvalidation,
    );
    const k = await keys.create(DID, { name: 'bot' });
    expect(await keys.revoke(k.info.id, { did: 'did:plc:someoneelse234567abcdef' })).toBe(false);
    expect(await keys.revoke(k.info.id, { did: DID })).toBe(true);
    expect(bus.published.slice(2).map((p) => p.event)).toEqual([{ kind: 'key', id: k.info.id }]);
  });

  it('keeps a session cached for the long lifetime', async () => {
    const store = new CountingStore();
    const s = sessions(store, new StandInInvalidation(() => 0), options(24 * 60 * MINUTE));
    const { token } = await s.create(DID);
    await s.validate(token);
    jest.advanceTimersByTime(20 * MINUTE);
    await s.validate(token);
    expect(store.reads).toBe(1);
    jest.advanceTimersByTime(10 * MINUTE);
    await s.validate(token);
    expect(store.reads).toBe(2);
  });

  it('a cached copy that looks idle is read again: activity seen by another instance keeps the session', async () => {
    const store = new CountingStore();
    const here = sessions(store, new StandInInvalidation(() => 0));
    const elsewhere = sessions(store, new StandInInvalidation(() => 0));
    const { token } = await here.create(DID);
    expect(await here.validate(token)).toBeDefined(); // cached here with lastSeenAt = now
    jest.advanceTimersByTime(4 * MINUTE);
    expect(await elsewhere.validate(token)).toBeDefined(); // records the activity (4 min)
    jest.advanceTimersByTime(2 * MINUTE);
    // Idle (5 min) by the copy cached here, not by the store.
    expect(await here.validate(token)).toBeDefined();
    jest.advanceTimersByTime(6 * MINUTE);
    expect(await here.validate(token)).toBeUndefined(); // idle for real now
  });
});
