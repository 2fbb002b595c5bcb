/**
 * The service-token cache's rules, with a clock the test moves: expiry read from the token,
 * the margin, the fallback lifetime, one mint for concurrent callers, invalidation (also of
 * a mint in flight), eviction on read and by the sweep, and the counters.
 */
import {
  type CachedServiceToken,
  ServiceTokenCache,
  type ServiceTokenKey,
  type SharedServiceTokenStore,
} from '../../lib/service-auth/service-token-cache.js';

const DID = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa';
const OTHER = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb';
const FEED = 'did:web:feed.example.com';
const key = (over: Partial<ServiceTokenKey> = {}): ServiceTokenKey => ({
  did: DID,
  aud: FEED,
  lxm: 'app.bsky.feed.getFeedSkeleton',
  ...over,
});

/** An unsigned JWT with these claims (the cache reads, never verifies). */
function jwt(claims: Record<string, unknown>): string {
  const part = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${part({ alg: 'ES256K', typ: 'JWT' })}.${part(claims)}.c2ln`;
}

/** A clock at a whole second, moved by the test. */
class Clock {
  ms = 1_800_000_000_000;
  now = () => this.ms;
  get seconds() {
    return Math.floor(this.ms / 1000);
  }
}

/** A mint that counts its calls and hands out a new token expiring `ttl` s from the clock. */
function minter(clock: Clock, ttl = 60) {
  let n = 0;
  const mint = async () => jwt({ exp: clock.seconds + ttl, jti: `t${++n}` });
  return { mint, calls: () => n };
}

function setup(
  options: { margin?: number; fallback?: number; shared?: SharedServiceTokenStore } = {},
) {
  const clock = new Clock();
  const unreadable: ServiceTokenKey[] = [];
  const cache = new ServiceTokenCache({
    marginMs: options.margin ?? 10_000,
    fallbackTtlMs: options.fallback ?? 50_000,
    now: clock.now,
    shared: options.shared,
    onUnreadableExpiry: (k) => unreadable.push(k),
  });
  return { clock, cache, unreadable };
}

const jti = (token: string) =>
  (
    JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()) as {
      jti: string;
    }
  ).jti;

describe('expiry and margin', () => {
  it('hands out a cached token until its exp minus the margin, then mints a new one', async () => {
    const { clock, cache } = setup();
    const m = minter(clock, 60);
    const first = await cache.get(key(), m.mint);
    clock.ms += 49_999; // 10.001 s before exp: still beyond the margin
    expect(await cache.get(key(), m.mint)).toBe(first);
    expect(m.calls()).toBe(1);
    clock.ms += 1; // exactly the margin left: no longer handed out
    const second = await cache.get(key(), m.mint);
    expect(second).not.toBe(first);
    expect(m.calls()).toBe(2);
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 2, entries: 1, valid: 1 });
  });

  it('follows the configured margin', async () => {
    const { clock, cache } = setup({ margin: 30_000 });
    const m = minter(clock, 60);
    await cache.get(key(), m.mint);
    clock.ms += 29_999;
    await cache.get(key(), m.mint);
    expect(m.calls()).toBe(1);
    clock.ms += 1;
    await cache.get(key(), m.mint);
    expect(m.calls()).toBe(2);
  });

  it('returns, without keeping, a token that is already within the margin', async () => {
    const { clock, cache } = setup();
    const m = minter(clock, 5); // the PDS gave 5 s: less than the 10 s margin
    const a = await cache.get(key(), m.mint);
    const b = await cache.get(key(), m.mint);
    expect(a).not.toBe(b);
    expect(m.calls()).toBe(2);
    expect(cache.stats()).toMatchObject({ entries: 0, misses: 2, hits: 0 });
  });

  it('believes an exp no further than an hour ahead, the longest a PDS issues', async () => {
    const { clock, cache } = setup();
    let calls = 0;
    const mint = async () => {
      calls++;
      return jwt({ exp: clock.seconds + 86_400 * 365 });
    };
    await cache.get(key(), mint);
    clock.ms += 3_600_000 - 10_001;
    await cache.get(key(), mint);
    expect(calls).toBe(1);
    clock.ms += 1;
    await cache.get(key(), mint);
    expect(calls).toBe(2);
  });

  it.each([
    ['a JWT without exp', jwt({ iss: DID })],
    ['a JWT whose exp is not a number', jwt({ exp: '1800000060' })],
    ['something that is not a JWT', 'opaque-token'],
  ])('caches %s for the fallback lifetime and reports it', async (_, token) => {
    const { clock, cache, unreadable } = setup({ fallback: 50_000 });
    let calls = 0;
    const mint = async () => {
      calls++;
      return token;
    };
    await cache.get(key(), mint);
    expect(unreadable).toEqual([key()]);
    clock.ms += 49_999;
    await cache.get(key(), mint);
    expect(calls).toBe(1);
    clock.ms += 1;
    await cache.get(key(), mint);
    expect(calls).toBe(2);
  });

  it('keeps one entry per (did, aud, lxm), method-less apart from every method', async () => {
    const { clock, cache } = setup();
    const m = minter(clock);
    const keys = [
      key(),
      key({ lxm: 'app.bsky.feed.getFeed' }),
      key({ lxm: null }),
      key({ aud: `${FEED}#bsky_fg` }),
      key({ did: OTHER }),
    ];
    const tokens = await Promise.all(keys.map((k) => cache.get(k, m.mint)));
    expect(new Set(tokens).size).toBe(keys.length);
    for (const [i, k] of keys.entries()) expect(await cache.get(k, m.mint)).toBe(tokens[i]);
    expect(m.calls()).toBe(keys.length);
  });
});

describe('single flight', () => {
  it('gives 100 concurrent callers of one key the token of one mint', async () => {
    const { clock, cache } = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    const mint = async () => {
      calls++;
      await gate;
      return jwt({ exp: clock.seconds + 60, jti: `t${calls}` });
    };
    const callers = Array.from({ length: 100 }, () => cache.get(key(), mint));
    release();
    const tokens = await Promise.all(callers);
    expect(calls).toBe(1);
    expect(new Set(tokens).size).toBe(1);
    expect(cache.stats()).toMatchObject({ hits: 99, misses: 1, entries: 1 });
  });

  it('gives every waiting caller the failure, keeps nothing, and mints again next time', async () => {
    const { clock, cache } = setup();
    let calls = 0;
    const failing = async () => {
      calls++;
      throw new Error('PDS down');
    };
    const results = await Promise.allSettled(
      Array.from({ length: 5 }, () => cache.get(key(), failing)),
    );
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect(calls).toBe(1);
    expect(cache.stats().entries).toBe(0);
    const m = minter(clock);
    await cache.get(key(), m.mint);
    expect(m.calls()).toBe(1);
  });
});

describe('invalidation', () => {
  async function filled() {
    const s = setup();
    const m = minter(s.clock);
    const keys = {
      feed: key(),
      feedService: key({ aud: `${FEED}#bsky_fg` }),
      feedOtherService: key({ aud: `${FEED}#other` }),
      labeler: key({ aud: 'did:web:labeler.example.com', lxm: null }),
      feedPrefix: key({ aud: `${FEED}x` }),
      other: key({ did: OTHER }),
    };
    const tokens: Record<string, string> = {};
    for (const [name, k] of Object.entries(keys)) tokens[name] = await s.cache.get(k, m.mint);
    const kept = async () => {
      const names: string[] = [];
      for (const [name, k] of Object.entries(keys)) {
        if ((await s.cache.get(k, m.mint)) === tokens[name]) names.push(name);
      }
      return names;
    };
    return { ...s, kept };
  }

  it('drops every token of a DID, and only that DID', async () => {
    const { cache, kept } = await filled();
    await cache.invalidate(DID);
    expect(await kept()).toEqual(['other']);
  });

  it('drops a bare audience with its #service forms, not a longer DID', async () => {
    const { cache, kept } = await filled();
    await cache.invalidate(DID, FEED);
    expect(await kept()).toEqual(['labeler', 'feedPrefix', 'other']);
  });

  it('drops only that service for an audience with a fragment', async () => {
    const { cache, kept } = await filled();
    await cache.invalidate(DID, `${FEED}#bsky_fg`);
    expect(await kept()).toEqual(['feed', 'feedOtherService', 'labeler', 'feedPrefix', 'other']);
  });

  it('neither stores a mint in flight nor lets new callers join it', async () => {
    const { clock, cache } = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    const mint = async () => {
      const n = ++calls;
      if (n === 1) await gate;
      return jwt({ exp: clock.seconds + 60, jti: `t${n}` });
    };
    const before = cache.get(key(), mint);
    await cache.invalidate(DID, FEED);
    const after = cache.get(key(), mint);
    release();
    expect(jti(await before)).toBe('t1');
    expect(jti(await after)).toBe('t2');
    expect(jti(await cache.get(key(), mint))).toBe('t2');
    expect(calls).toBe(2);
  });

  it('mints instead of reading when asked for a fresh token, and keeps that one', async () => {
    const { clock, cache } = setup();
    const m = minter(clock);
    const old = await cache.get(key(), m.mint);
    const fresh = await cache.get(key(), m.mint, true);
    expect(fresh).not.toBe(old);
    expect(await cache.get(key(), m.mint)).toBe(fresh);
    expect(m.calls()).toBe(2);
  });
});

describe('eviction and counters', () => {
  it('counts valid and expired entries, evicts on read and in the sweep', async () => {
    const { clock, cache } = setup();
    const short = minter(clock, 20);
    const long = minter(clock, 120);
    await cache.get(key({ lxm: 'a.b.short' }), short.mint);
    await cache.get(key({ lxm: 'a.b.shorter' }), short.mint);
    await cache.get(key({ lxm: 'a.b.long' }), long.mint);
    expect(cache.stats()).toEqual({ entries: 3, valid: 3, expired: 0, hits: 0, misses: 3 });
    clock.ms += 10_000; // the 20 s tokens reach their margin
    expect(cache.stats()).toEqual({ entries: 3, valid: 1, expired: 2, hits: 0, misses: 3 });
    // A read of an expired entry evicts it (and mints a new one).
    await cache.get(key({ lxm: 'a.b.short' }), short.mint);
    expect(cache.stats()).toEqual({ entries: 3, valid: 2, expired: 1, hits: 0, misses: 4 });
    expect(cache.sweep()).toBe(1);
    expect(cache.stats()).toEqual({ entries: 2, valid: 2, expired: 0, hits: 0, misses: 4 });
  });
});

describe('with a shared store', () => {
  /** A shared store in memory, as another instance would see it. */
  class MapStore implements SharedServiceTokenStore {
    readonly map = new Map<string, CachedServiceToken>();
    gets = 0;
    async get(k: ServiceTokenKey, now: number) {
      this.gets++;
      const v = this.map.get(JSON.stringify(k));
      return v && v.validUntil > now ? v : undefined;
    }
    async set(k: ServiceTokenKey, v: CachedServiceToken) {
      this.map.set(JSON.stringify(k), v);
    }
    async invalidate(did: string) {
      for (const id of this.map.keys()) if (id.includes(did)) this.map.delete(id);
    }
  }

  it('reads what another instance minted, and counts what this instance knows of', async () => {
    const shared = new MapStore();
    const a = setup({ shared });
    const b = setup({ shared });
    const m = minter(a.clock);
    const token = await a.cache.get(key(), m.mint);
    expect(await b.cache.get(key(), m.mint)).toBe(token);
    expect(m.calls()).toBe(1);
    expect(b.cache.stats()).toEqual({ entries: 1, valid: 1, expired: 0, hits: 1, misses: 0 });
    // Invalidation on b reaches a through the store.
    await b.cache.invalidate(DID);
    expect(await a.cache.get(key(), m.mint)).not.toBe(token);
    expect(m.calls()).toBe(2);
  });

  it('reads the store once for concurrent callers of one key', async () => {
    const shared = new MapStore();
    const { clock, cache } = setup({ shared });
    const m = minter(clock);
    await Promise.all(Array.from({ length: 20 }, () => cache.get(key(), m.mint)));
    expect(shared.gets).toBe(1);
    expect(m.calls()).toBe(1);
  });
});

describe('fresh mints', () => {
  it('are joined by plain callers, but never join a plain mint', async () => {
    const { clock, cache } = setup();
    const gates: (() => void)[] = [];
    let calls = 0;
    const mint = async () => {
      const n = ++calls;
      await new Promise<void>((r) => gates.push(r));
      return jwt({ exp: clock.seconds + 60, jti: `t${n}` });
    };
    const plain = cache.get(key(), mint);
    const fresh = cache.get(key(), mint, true); // does not join the plain mint
    const later = cache.get(key(), mint); // joins a mint in flight
    for (const open of gates) open();
    expect(calls).toBe(2);
    expect(jti(await fresh)).toBe('t2');
    expect(jti(await plain)).toBe('t1');
    expect(['t1', 't2']).toContain(jti(await later));
  });

  it('serve plain callers that arrive while they are in flight', async () => {
    const { clock, cache } = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    const mint = async () => {
      calls++;
      await gate;
      return jwt({ exp: clock.seconds + 60, jti: `t${calls}` });
    };
    await cache.invalidate(DID);
    const fresh = cache.get(key(), mint, true);
    const plain = Array.from({ length: 10 }, () => cache.get(key(), mint));
    release();
    expect(new Set(await Promise.all([fresh, ...plain])).size).toBe(1);
    expect(calls).toBe(1);
  });
});
