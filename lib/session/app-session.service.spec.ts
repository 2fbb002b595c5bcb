import { jest } from '@jest/globals';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { MemoryAppSessionStore } from '../storage/memory/memory.stores.js';
import type { AppSessionRecord } from '../storage/store.interface.js';
import { AppSessionService } from './app-session.service.js';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const did = 'did:plc:abcdefghijklmnopqrstuvwx';

class CountingStore extends MemoryAppSessionStore {
  touches: Array<{ id: string; at: Date }> = [];
  override async touch(id: string, at: Date): Promise<void> {
    this.touches.push({ id, at });
    await super.touch(id, at);
  }
}

class CountingReads extends CountingStore {
  reads = 0;
  override async get(id: string): Promise<AppSessionRecord | undefined> {
    this.reads++;
    return super.get(id);
  }
}

function service(store: CountingStore, cacheTtlMs = 0, cacheMaxEntries = 100_000) {
  const options = {
    appSession: { idleTtlMs: 2 * DAY, absoluteTtlMs: 10 * DAY, cacheTtlMs, cacheMaxEntries },
  } as unknown as ResolvedAtProtoOptions;
  return new AppSessionService(options, store);
}

describe('AppSessionService', () => {
  beforeEach(() => {
    jest.useFakeTimers({
      now: new Date('2026-11-22T10:00:00Z'),
      doNotFake: ['nextTick', 'setImmediate'],
    });
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  it('stores only the SHA-256 of a 256-bit token', async () => {
    const store = new CountingStore();
    const { token, session } = await service(store).create(did, 'UA/1.0');
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(session.id).toBe(AppSessionService.idOf(token));
    expect(session.id).not.toContain(token);
    const stored = (await store.get(session.id)) as AppSessionRecord;
    expect(JSON.stringify(stored)).not.toContain(token);
    expect(stored.userAgent).toBe('UA/1.0');
  });

  it('writes lastSeenAt at most once a minute', async () => {
    const store = new CountingStore();
    const s = service(store);
    const { token } = await s.create(did);
    for (let i = 0; i < 5; i++) {
      jest.advanceTimersByTime(10_000);
      expect(await s.validate(token)).toBeDefined();
    }
    expect(store.touches).toHaveLength(0); // 50 s: no write yet
    jest.advanceTimersByTime(10_000);
    await s.validate(token);
    await s.validate(token);
    expect(store.touches).toHaveLength(1);
    jest.advanceTimersByTime(59_000);
    await s.validate(token);
    expect(store.touches).toHaveLength(1);
    jest.advanceTimersByTime(1_000);
    await s.validate(token);
    expect(store.touches).toHaveLength(2);
  });

  it('ends a session after the idle timeout and after the absolute lifetime', async () => {
    const s = service(new CountingStore());
    const idle = await s.create(did);
    jest.advanceTimersByTime(2 * DAY - MINUTE);
    expect(await s.validate(idle.token)).toBeDefined(); // activity renews the idle window
    jest.advanceTimersByTime(2 * DAY - MINUTE);
    expect(await s.validate(idle.token)).toBeDefined();
    jest.advanceTimersByTime(2 * DAY);
    expect(await s.validate(idle.token)).toBeUndefined();

    const busy = await s.create(did);
    for (let t = 0; t < 10 * DAY - DAY; t += DAY) {
      jest.advanceTimersByTime(DAY);
      expect(await s.validate(busy.token)).toBeDefined();
    }
    jest.advanceTimersByTime(DAY);
    expect(await s.validate(busy.token)).toBeUndefined(); // absolute lifetime, however active
  });

  it('lists active devices per DID and revokes one or all', async () => {
    const s = service(new CountingStore());
    const a = await s.create(did, 'phone');
    const b = await s.create(did, 'laptop');
    await s.create('did:plc:zzzzzzzzzzzzzzzzzzzzzzzz', 'other user');
    expect((await s.list(did)).map((x) => x.userAgent).sort()).toEqual(['laptop', 'phone']);
    expect(await s.revoke(a.session.id)).toBe(true);
    expect(await s.revoke(a.session.id)).toBe(false);
    expect(await s.validate(a.token)).toBeUndefined();
    expect(await s.hasActive(did)).toBe(true);
    expect(await s.revokeAll(did)).toBe(1);
    expect(await s.validate(b.token)).toBeUndefined();
    expect(await s.hasActive(did)).toBe(false);
  });

  it.each([0, 2000])(
    'revoke(id, { did }) ends only a session of that DID (cache TTL %i ms)',
    async (cacheTtlMs) => {
      const s = service(new CountingStore(), cacheTtlMs);
      const bob = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb';
      const alice = await s.create(did, 'alice phone');
      const bobs = await s.create(bob, 'bob laptop');
      expect(await s.validate(alice.token)).toBeDefined(); // cached when the TTL is on
      // Bob's "devices" page posts Alice's session id: refused, and nothing changes.
      expect(await s.revoke(alice.session.id, { did: bob })).toBe(false);
      expect(await s.validate(alice.token)).toBeDefined();
      expect((await s.list(did)).map((x) => x.id)).toEqual([alice.session.id]);
      // Unknown ids are refused the same way.
      expect(await s.revoke('0'.repeat(64), { did: bob })).toBe(false);
      expect(await s.revoke('not an id', { did: bob })).toBe(false);
      // The owner can.
      expect(await s.revoke(bobs.session.id, { did: bob })).toBe(true);
      expect(await s.validate(bobs.token)).toBeUndefined();
      expect(await s.revoke(alice.session.id, { did })).toBe(true);
      expect(await s.validate(alice.token)).toBeUndefined();
      expect(await s.revoke(alice.session.id, { did })).toBe(false); // already revoked
    },
  );

  it.each(['', 'short', `${'a'.repeat(43)}=`, 'ä'.repeat(43)])(
    'treats malformed token %j as no session',
    async (t) => {
      expect(await service(new CountingStore()).validate(t)).toBeUndefined();
    },
  );

  it('caches validated sessions briefly; a revocation here applies at once, elsewhere within the TTL', async () => {
    const store = new CountingReads();
    const s = service(store, 2000);
    const a = await s.create(did);
    const b = await s.create(did);
    for (let i = 0; i < 10; i++) expect(await s.validate(a.token)).toBeDefined();
    expect(store.reads).toBe(1);
    // Revoked through this instance: refused on the very next request.
    await s.revoke(a.session.id);
    expect(await s.validate(a.token)).toBeUndefined();
    // Revoked by another instance (straight in the shared store): refused once the entry ages out.
    expect(await s.validate(b.token)).toBeDefined();
    await store.revoke(b.session.id, new Date());
    jest.advanceTimersByTime(2001);
    expect(await s.validate(b.token)).toBeUndefined();
    // Unknown tokens are not cached: each one is a store read.
    const before = store.reads;
    await s.validate('x'.repeat(43));
    await s.validate('x'.repeat(43));
    expect(store.reads).toBe(before + 2);
  });

  it('does not cache a record read while this instance revoked it', async () => {
    let release!: () => void;
    class SlowStore extends CountingStore {
      gate: Promise<void> | undefined;
      override async get(id: string): Promise<AppSessionRecord | undefined> {
        const record = await super.get(id); // read before the revocation lands
        await this.gate;
        return record;
      }
    }
    const store = new SlowStore();
    const s = service(store, 2000);
    const { token, session } = await s.create(did);
    store.gate = new Promise<void>((r) => (release = r));
    const inFlight = s.validate(token);
    await s.revoke(session.id);
    release();
    expect(await inFlight).toBeUndefined();
    store.gate = undefined;
    expect(await s.validate(token)).toBeUndefined();
    // A session created after a log-out-everywhere is not affected.
    await s.revokeAll(did);
    jest.advanceTimersByTime(1);
    const fresh = await s.create(did);
    expect(await s.validate(fresh.token)).toBeDefined();
  });

  it('keeps the most recently used sessions when the cache is full (LRU, bounded)', async () => {
    const store = new CountingReads();
    const s = service(store, 60_000, 2);
    const [a, b, c] = [await s.create(did), await s.create(did), await s.create(did)];
    await s.validate(a.token);
    await s.validate(b.token);
    await s.validate(a.token); // a is now the most recently used
    await s.validate(c.token); // full: b goes, not a (the oldest inserted)
    const before = store.reads;
    await s.validate(a.token);
    expect(store.reads).toBe(before); // still cached
    await s.validate(b.token);
    expect(store.reads).toBe(before + 1); // evicted, read again
  });

  it('log out everywhere drops every cached session of the DID, and only them', async () => {
    const store = new CountingReads();
    const s = service(store, 60_000);
    const other = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb';
    const mine = [await s.create(did), await s.create(did)];
    const theirs = await s.create(other);
    for (const x of [...mine, theirs]) await s.validate(x.token);
    await s.revokeAll(did);
    for (const x of mine) expect(await s.validate(x.token)).toBeUndefined();
    const before = store.reads;
    expect(await s.validate(theirs.token)).toBeDefined();
    expect(store.reads).toBe(before); // the other DID's entry stayed cached
  });
});
