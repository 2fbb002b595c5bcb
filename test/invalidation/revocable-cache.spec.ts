/**
 * The cache behind AppSessionService and AtProtoApiKeyService: the invariants its class
 * comment states, each shown by a case that breaks without it.
 */
import {
  type CacheTrust,
  RevocableCache,
  TOMBSTONE_MAX_ENTRIES,
  TOMBSTONE_TTL_MS,
} from '../../lib/invalidation/revocable-cache.js';

interface Row {
  id: string;
  did: string;
  createdAt: Date;
}

const SHORT = 2000;
const LONG = 300_000;
const T0 = 1_800_000_000_000;

function row(id: string, did = 'did:plc:alice', createdAt = T0 - 1000): Row {
  return { id, did, createdAt: new Date(createdAt) };
}

/** A trust the test switches by hand; a lapse clears the caches it was given. */
class ManualTrust implements CacheTrust {
  trusted = true;
  since = Number.NEGATIVE_INFINITY;
  readonly caches: RevocableCache<Row>[] = [];
  grantLong(startedAt: number): boolean {
    return this.trusted && startedAt >= this.since;
  }
  stillTrusted(now: number): boolean {
    if (!this.trusted) for (const c of this.caches) c.clear(now);
    return this.trusted;
  }
}

function cache(trust?: ManualTrust, maxEntries = 1000): RevocableCache<Row> {
  const c = new RevocableCache<Row>({ shortTtlMs: SHORT, longTtlMs: LONG, maxEntries, trust });
  trust?.caches.push(c);
  return c;
}

describe('RevocableCache', () => {
  it('keeps an entry for the short lifetime without a trust, the long one while trusted', () => {
    const plain = cache();
    plain.put(row('a'), T0, T0);
    expect(plain.get('a', T0 + SHORT - 1)).toBeDefined();
    expect(plain.get('a', T0 + SHORT)).toBeUndefined();

    const trust = new ManualTrust();
    const c = cache(trust);
    c.put(row('a'), T0, T0);
    expect(c.get('a', T0 + 60_000)).toBeDefined();
    expect(c.get('a', T0 + LONG)).toBeUndefined();
  });

  it('counts the lifetime from the start of the read, not its end', () => {
    const c = cache();
    c.put(row('a'), T0, T0 + 1500);
    expect(c.get('a', T0 + SHORT)).toBeUndefined();
  });

  it('serves a long entry only while the trust holds; a lapse drops short entries too', () => {
    const trust = new ManualTrust();
    const c = cache(trust);
    c.put(row('long'), T0, T0);
    trust.trusted = false;
    c.put(row('short'), T0 + 10, T0 + 10); // cached while untrusted: the short lifetime
    expect(c.get('short', T0 + 20)).toBeDefined();
    expect(c.get('long', T0 + 20)).toBeUndefined(); // the lapse clears everything
    expect(c.get('short', T0 + 20)).toBeUndefined();
    trust.trusted = true;
    c.put(row('long'), T0 + 30, T0 + 30);
    expect(c.get('long', T0 + 60_000)).toBeDefined();
  });

  it('does not give the long lifetime to a read the trust does not grant it to', () => {
    const trust = new ManualTrust();
    trust.since = T0 + 100; // e.g. a new subscription
    const c = cache(trust);
    c.put(row('a'), T0, T0 + 200);
    expect(c.get('a', T0 + SHORT - 1)).toBeDefined();
    expect(c.get('a', T0 + SHORT)).toBeUndefined();
  });

  it('refuses and does not cache a record whose id was revoked while its read was under way', () => {
    const c = cache(new ManualTrust());
    const startedAt = T0;
    c.revokeId('a', T0 + 5);
    expect(c.revoked(row('a'), T0 + 10)).toBe(true);
    c.put(row('a'), startedAt, T0 + 10);
    expect(c.get('a', T0 + 11)).toBeUndefined();
  });

  it('drops a cached entry when its id is revoked', () => {
    const c = cache(new ManualTrust());
    c.put(row('a'), T0, T0);
    c.revokeId('a', T0 + 1);
    expect(c.get('a', T0 + 2)).toBeUndefined();
  });

  it('log out everywhere: drops the DID entries, refuses its records created up to then, not later ones', () => {
    const c = cache(new ManualTrust());
    c.put(row('a', 'did:plc:alice'), T0, T0);
    c.put(row('b', 'did:plc:bob'), T0, T0);
    c.revokeDid('did:plc:alice', T0 + 100, T0 + 100);
    expect(c.get('a', T0 + 101)).toBeUndefined();
    expect(c.get('b', T0 + 101)).toBeDefined();
    expect(c.revoked(row('a', 'did:plc:alice', T0 + 100), T0 + 200)).toBe(true);
    const fresh = row('c', 'did:plc:alice', T0 + 150);
    expect(c.revoked(fresh, T0 + 200)).toBe(false);
    c.put(fresh, T0 + 160, T0 + 170);
    expect(c.get('c', T0 + 171)).toBeDefined();
  });

  it('does not cache a record of a DID whose read started before its log out everywhere was known', () => {
    // The creation time does not help here (clocks of instances differ): the read may
    // predate the revocation, so it is not cached (nor refused: its row says what it says).
    const c = cache(new ManualTrust());
    const record = row('a', 'did:plc:alice', T0 + 50);
    c.revokeDid('did:plc:alice', T0 + 10, T0 + 100);
    expect(c.revoked(record, T0 + 120)).toBe(false);
    c.put(record, T0 + 90, T0 + 120);
    expect(c.get('a', T0 + 121)).toBeUndefined();
  });

  it('a tombstone refuses for TOMBSTONE_TTL_MS; a read that started before it is still not cached after', () => {
    const c = cache(new ManualTrust());
    c.revokeId('a', T0);
    const later = T0 + TOMBSTONE_TTL_MS;
    expect(c.revoked(row('a'), later)).toBe(false);
    c.put(row('a'), T0 - 1, later);
    expect(c.get('a', later + 1)).toBeUndefined();
  });

  it('tombstones are bounded; a read older than a forgotten tombstone is not cached', () => {
    const c = cache(new ManualTrust());
    for (let i = 0; i <= TOMBSTONE_MAX_ENTRIES; i++) c.revokeId(`id-${i}`, T0 + i);
    // id-0 was forgotten (the bound), so its read in flight since before T0 must not cache.
    expect(c.revoked(row('id-0'), T0 + TOMBSTONE_MAX_ENTRIES + 1)).toBe(false);
    c.put(row('id-0'), T0 - 1, T0 + TOMBSTONE_MAX_ENTRIES + 1);
    expect(c.get('id-0', T0 + TOMBSTONE_MAX_ENTRIES + 2)).toBeUndefined();
    // A read that started after it was recorded is cached.
    c.put(row('other'), T0 + 1, T0 + TOMBSTONE_MAX_ENTRIES + 1);
    expect(c.get('other', T0 + TOMBSTONE_MAX_ENTRIES + 2)).toBeDefined();
  });

  it('clear: drops every entry and does not cache reads that started before it', () => {
    const c = cache(new ManualTrust());
    c.put(row('a'), T0, T0);
    c.clear(T0 + 10);
    expect(c.size).toBe(0);
    c.put(row('b'), T0 + 10, T0 + 20);
    expect(c.get('b', T0 + 21)).toBeUndefined();
    c.put(row('b'), T0 + 11, T0 + 20);
    expect(c.get('b', T0 + 21)).toBeDefined();
  });

  it('evicts the least recently used entry beyond maxEntries', () => {
    const c = cache(new ManualTrust(), 2);
    c.put(row('a'), T0, T0);
    c.put(row('b'), T0, T0);
    c.get('a', T0 + 1);
    c.put(row('c'), T0 + 2, T0 + 2);
    expect(c.get('a', T0 + 3)).toBeDefined();
    expect(c.get('b', T0 + 3)).toBeUndefined();
  });

  it('with cacheTtl 0 caches nothing and keeps no tombstones', () => {
    const c = new RevocableCache<Row>({ shortTtlMs: 0, longTtlMs: LONG, maxEntries: 10 });
    c.put(row('a'), T0, T0);
    c.revokeId('a', T0);
    expect(c.get('a', T0)).toBeUndefined();
    expect(c.revoked(row('a'), T0)).toBe(false);
  });
});
