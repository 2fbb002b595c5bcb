/**
 * AtProtoApiKeyService on the memory store, with a fake clock: what a key owner and the
 * guard rely on. The databases are covered by the store tests next to this file.
 */
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { AtProtoBadRequestError } from 'nestjs-atproto-auth';
import { apiKeyIdOf } from '../../lib/api-keys/api-key-format.js';
import type { AtProtoApiKeyRecord } from '../../lib/api-keys/api-key.store.js';
import { AtProtoApiKeyService, apiKeyHasScopes } from '../../lib/api-keys/api-key.service.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import { MemoryApiKeyStore } from '../../lib/storage/memory/memory-api-key.store.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const DAY = 24 * 60 * MINUTE;
const alice = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa';
const bob = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb';

class CountingStore extends MemoryApiKeyStore {
  reads = 0;
  touches: Array<{ id: string; at: Date; wrote: boolean }> = [];
  override async get(id: string): Promise<AtProtoApiKeyRecord | undefined> {
    this.reads++;
    return super.get(id);
  }
  override async touch(id: string, at: Date, staleBefore: Date): Promise<boolean> {
    const wrote = await super.touch(id, at, staleBefore);
    this.touches.push({ id, at, wrote });
    return wrote;
  }
}

function service(
  store: MemoryApiKeyStore,
  o: { cacheTtlMs?: number; prefix?: string; lastUsedIntervalMs?: number } = {},
) {
  const options = {
    appSession: { cacheTtlMs: o.cacheTtlMs ?? 0, cacheMaxEntries: 100_000 },
    apiKeys: {
      prefix: o.prefix ?? 'atp_',
      lastUsedIntervalMs: o.lastUsedIntervalMs ?? 5 * MINUTE,
      revokedGraceMs: DAY,
    },
  } as unknown as ResolvedAtProtoOptions;
  return new AtProtoApiKeyService(options, store);
}

/** Lets the not-awaited last-used write settle. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('AtProtoApiKeyService', () => {
  beforeEach(() => {
    jest.useFakeTimers({
      now: new Date('2026-11-22T10:00:00Z'),
      doNotFake: ['nextTick', 'setImmediate'],
    });
  });
  afterEach(() => {
    jest.useRealTimers();
    jest.restoreAllMocks();
  });

  it('returns the key once: the stored record and the info hold its SHA-256 and display prefix only', async () => {
    const store = new CountingStore();
    const s = service(store, { prefix: 'acme_' });
    const { key, info } = await s.create(alice, { name: 'deploy bot', scopes: ['feed:read'] });
    expect(key).toMatch(/^acme_[0-9A-Za-z]{38}$/);
    expect(info).toEqual({
      id: apiKeyIdOf(key),
      did: alice,
      name: 'deploy bot',
      displayPrefix: key.slice(0, 'acme_'.length + 8),
      scopes: ['feed:read'],
      createdAt: new Date('2026-11-22T10:00:00Z'),
      expiresAt: null,
      revokedAt: null,
      lastUsedAt: null,
      active: true,
    });
    const secretPart = key.slice('acme_'.length + 8);
    const stored = JSON.stringify(await store.get(info.id));
    for (const text of [stored, JSON.stringify(info), JSON.stringify(await s.list(alice))]) {
      expect(text).not.toContain(key);
      expect(text).not.toContain(secretPart);
      expect(text).not.toContain(key.slice('acme_'.length));
    }
  });

  it('validates a key; refuses typos without reading the store, and unknown keys after one read', async () => {
    const store = new CountingStore();
    const s = service(store);
    const { key, info } = await s.create(alice, { name: 'bot' });
    expect(await s.validate(key)).toMatchObject({ id: info.id, did: alice, name: 'bot' });
    const reads = store.reads;
    const typo = `${key.slice(0, 10)}${key[10] === 'a' ? 'b' : 'a'}${key.slice(11)}`;
    for (const bad of [typo, key.slice(0, -1), `${key} `, '', 'atp_', `Bearer ${key}`]) {
      expect(await s.validate(bad)).toBeUndefined();
    }
    expect(await s.validate(undefined as unknown as string)).toBeUndefined();
    expect(store.reads).toBe(reads); // the checksum alone refused them
    // A well-formed key (valid checksum) that was never issued costs one read.
    const { key: other } = await service(new CountingStore()).create(alice, { name: 'elsewhere' });
    expect(await s.validate(other)).toBeUndefined();
    expect(store.reads).toBe(reads + 1);
  });

  it('refuses a key of another prefix, even a real one', async () => {
    const store = new CountingStore();
    const { key } = await service(store, { prefix: 'old_' }).create(alice, { name: 'bot' });
    expect(await service(store, { prefix: 'new_' }).validate(key)).toBeUndefined();
  });

  it('refuses an expired key, and a revoked one', async () => {
    const s = service(new CountingStore());
    const expiring = await s.create(alice, {
      name: 'an hour',
      expiresAt: new Date(Date.now() + 60 * MINUTE),
    });
    const revoked = await s.create(alice, { name: 'revoked' });
    jest.advanceTimersByTime(60 * MINUTE - 1);
    expect(await s.validate(expiring.key)).toBeDefined();
    jest.advanceTimersByTime(1);
    expect(await s.validate(expiring.key)).toBeUndefined();
    expect(await s.revoke(revoked.info.id, { did: alice })).toBe(true);
    expect(await s.validate(revoked.key)).toBeUndefined();
  });

  it.each([0, 2000])(
    'revoke(id, { did }) refuses another DID and unknown ids, changing nothing (cache TTL %i ms)',
    async (cacheTtlMs) => {
      const store = new CountingStore();
      const s = service(store, { cacheTtlMs });
      const a = await s.create(alice, { name: 'alice bot' });
      const b = await s.create(bob, { name: 'bob bot' });
      expect(await s.validate(a.key)).toBeDefined(); // cached when the TTL is on
      expect(await s.revoke(a.info.id, { did: bob })).toBe(false);
      expect(await s.validate(a.key)).toBeDefined();
      expect((await store.get(a.info.id))?.revokedAt).toBeNull();
      expect(await s.revoke('0'.repeat(64), { did: bob })).toBe(false);
      expect(await s.revoke('not an id', { did: bob })).toBe(false);
      expect(await s.revoke(b.info.id, { did: bob })).toBe(true);
      expect(await s.validate(b.key)).toBeUndefined();
      expect(await s.revoke(a.info.id, { did: alice })).toBe(true);
      expect(await s.validate(a.key)).toBeUndefined(); // at once, cache or not
      expect(await s.revoke(a.info.id, { did: alice })).toBe(false); // already revoked
    },
  );

  it('lists a DID’s active and recently ended keys, newest first, and drops those ended before the grace', async () => {
    const s = service(new CountingStore());
    const first = await s.create(alice, { name: 'first' });
    jest.advanceTimersByTime(SECOND);
    const second = await s.create(alice, { name: 'second', expiresAt: new Date(Date.now() + DAY) });
    jest.advanceTimersByTime(SECOND);
    const third = await s.create(alice, { name: 'third' });
    await s.create(bob, { name: 'bob’s' });
    expect((await s.list(alice)).map((k) => k.name)).toEqual(['third', 'second', 'first']);

    await s.revoke(third.info.id, { did: alice });
    jest.advanceTimersByTime(DAY); // `second` expires now
    const listed = await s.list(alice);
    expect(listed.map((k) => [k.name, k.active])).toEqual([
      ['third', false],
      ['second', false],
      ['first', true],
    ]);
    jest.advanceTimersByTime(SECOND); // `third` ended more than a day ago
    expect((await s.list(alice)).map((k) => k.name)).toEqual(['second', 'first']);
    jest.advanceTimersByTime(DAY);
    expect((await s.list(alice)).map((k) => k.name)).toEqual(['first']);
    expect(first.info.id).toBe((await s.list(alice))[0]?.id);
    expect(second.info.name).toBe('second');
  });

  it('hasActive: a DID with a usable key, not with revoked or expired ones only', async () => {
    const s = service(new CountingStore());
    expect(await s.hasActive(alice)).toBe(false);
    const a = await s.create(alice, { name: 'a', expiresAt: new Date(Date.now() + MINUTE) });
    expect(await s.hasActive(alice)).toBe(true);
    expect(await s.hasActive(bob)).toBe(false);
    jest.advanceTimersByTime(MINUTE);
    expect(await s.hasActive(alice)).toBe(false);
    const b = await s.create(alice, { name: 'b' });
    expect(await s.hasActive(alice)).toBe(true);
    await s.revoke(b.info.id, { did: alice });
    expect(await s.hasActive(alice)).toBe(false);
    expect(a.info.name).toBe('a');
  });

  it('writes lastUsedAt at most once per interval, off the request path', async () => {
    const store = new CountingStore();
    const s = service(store, { lastUsedIntervalMs: 5 * MINUTE });
    const { key, info } = await s.create(alice, { name: 'bot' });
    expect(await s.validate(key)).toBeDefined();
    await settle();
    expect(store.touches).toEqual([{ id: info.id, at: new Date(Date.now()), wrote: true }]);
    const first = Date.now();
    for (let i = 0; i < 10; i++) {
      jest.advanceTimersByTime(30 * SECOND);
      expect(await s.validate(key)).toBeDefined();
    }
    await settle();
    expect(store.touches).toHaveLength(1); // 5 minutes exactly: not older than the interval yet
    jest.advanceTimersByTime(1);
    const info2 = await s.validate(key);
    await settle();
    expect(store.touches).toHaveLength(2);
    expect(store.touches[1]).toMatchObject({ wrote: true });
    expect((await store.get(info.id))?.lastUsedAt).toEqual(new Date(first + 5 * MINUTE + 1));
    expect(info2?.lastUsedAt).toEqual(new Date(first + 5 * MINUTE + 1));
  });

  it('a failing or slow last-used write neither fails nor delays validation, and its log names no key', async () => {
    const warnings: string[] = [];
    jest.spyOn(Logger.prototype, 'warn').mockImplementation((message: unknown) => {
      warnings.push(String(message));
    });
    let release!: () => void;
    class BrokenTouch extends CountingStore {
      override async touch(): Promise<boolean> {
        await new Promise<void>((r) => (release = r));
        throw new Error('database down');
      }
    }
    const s = service(new BrokenTouch());
    const { key } = await s.create(alice, { name: 'bot' });
    expect(await s.validate(key)).toBeDefined(); // resolved while the write hangs
    release();
    await settle();
    await settle();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/last use of an API key/);
    expect(warnings[0]).toMatch(/database down/);
    expect(warnings[0]).not.toContain(key);
    expect(warnings[0]).not.toContain(key.slice(4, 12 + 8));
  });

  it('caches validated keys briefly; a revocation here applies at once, elsewhere within the TTL', async () => {
    const store = new CountingStore();
    const s = service(store, { cacheTtlMs: 2000 });
    const other = service(store, { cacheTtlMs: 2000 });
    const a = await s.create(alice, { name: 'a' });
    const b = await s.create(alice, { name: 'b' });
    for (let i = 0; i < 10; i++) expect(await s.validate(a.key)).toBeDefined();
    expect(store.reads).toBe(1);
    expect(await s.revoke(a.info.id, { did: alice })).toBe(true);
    expect(await s.validate(a.key)).toBeUndefined();
    // Revoked through another instance: refused here once the entry ages out.
    expect(await s.validate(b.key)).toBeDefined();
    expect(await other.revoke(b.info.id, { did: alice })).toBe(true);
    jest.advanceTimersByTime(2001);
    expect(await s.validate(b.key)).toBeUndefined();
  });

  it('shares one store read between concurrent validations of one key (cache on)', async () => {
    const store = new CountingStore();
    const s = service(store, { cacheTtlMs: 2000 });
    const { key } = await s.create(alice, { name: 'a' });
    const results = await Promise.all(Array.from({ length: 50 }, () => s.validate(key)));
    expect(results.every((r) => r?.did === alice)).toBe(true);
    expect(store.reads).toBe(1);
    await settle();
    expect(store.touches).toHaveLength(1);
  });

  it('does not cache a record read while this instance revoked it', async () => {
    let release!: () => void;
    class SlowStore extends CountingStore {
      gate: Promise<void> | undefined;
      override async get(id: string): Promise<AtProtoApiKeyRecord | undefined> {
        const record = await super.get(id); // read before the revocation lands
        await this.gate;
        return record;
      }
    }
    const store = new SlowStore();
    const s = service(store, { cacheTtlMs: 2000 });
    const { key, info } = await s.create(alice, { name: 'a' });
    store.gate = new Promise<void>((r) => (release = r));
    const inFlight = s.validate(key);
    expect(await s.revoke(info.id, { did: alice })).toBe(true);
    release();
    expect(await inFlight).toBeUndefined();
    store.gate = undefined;
    expect(await s.validate(key)).toBeUndefined();
  });

  it.each([
    [{ name: '' }, /name/],
    [{ name: '   ' }, /name/],
    [{ name: 'x'.repeat(101) }, /name/],
    [{ name: 'line\nbreak' }, /name/],
    [{ name: 'bidi \u202e trick' }, /name/],
    [{ name: 'lone \ud800 surrogate' }, /name/],
    [{ name: 42 }, /name/],
    [{ name: 'ok', expiresAt: new Date('2026-11-22T09:59:59Z') }, /expiresAt/],
    [{ name: 'ok', expiresAt: new Date('nonsense') }, /expiresAt/],
    [{ name: 'ok', expiresAt: '2027-01-01' }, /expiresAt/],
    [{ name: 'ok', scopes: 'feed:read' }, /scopes/],
    [{ name: 'ok', scopes: [''] }, /scopes/],
    [{ name: 'ok', scopes: ['has space'] }, /scopes/],
    [{ name: 'ok', scopes: ['x'.repeat(65)] }, /scopes/],
    [{ name: 'ok', scopes: Array.from({ length: 17 }, (_, i) => `s${i}`) }, /scopes/],
  ])('refuses bad input %j with AtProtoBadRequestError, storing nothing', async (input, what) => {
    const store = new CountingStore();
    const s = service(store);
    const error = await s.create(alice, input as unknown as { name: string }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoBadRequestError);
    expect((error as Error).message).toMatch(what);
    expect(await store.listForDid(alice)).toEqual([]);
  });

  it('keeps unicode names, and scopes in order without duplicates', async () => {
    const s = service(new CountingStore());
    const { info } = await s.create(alice, {
      name: 'Bötchen 🤖',
      scopes: ['feed:read', 'posts:write', 'feed:read'],
    });
    expect(info.name).toBe('Bötchen 🤖');
    expect(info.scopes).toEqual(['feed:read', 'posts:write']);
  });

  it('apiKeyHasScopes: a key not narrowed has every scope; a narrowed one only its own', async () => {
    const s = service(new CountingStore());
    const open = (await s.create(alice, { name: 'open' })).info;
    const narrow = (await s.create(alice, { name: 'narrow', scopes: ['a', 'b'] })).info;
    const none = (await s.create(alice, { name: 'none', scopes: [] })).info;
    expect(apiKeyHasScopes(open, ['a', 'z'])).toBe(true);
    expect(apiKeyHasScopes(narrow, ['a'])).toBe(true);
    expect(apiKeyHasScopes(narrow, ['a', 'b'])).toBe(true);
    expect(apiKeyHasScopes(narrow, ['a', 'z'])).toBe(false);
    expect(apiKeyHasScopes(none, ['a'])).toBe(false);
    expect(apiKeyHasScopes(none, [])).toBe(true);
  });
});
