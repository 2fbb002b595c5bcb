import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node';
import {
  type AtProtoSessionStore,
  type AtProtoStateStore,
  type AtProtoSessionInfoStore,
  type AtProtoVersionedSessionStore,
  hasSessionInfo,
  isVersionedSessionStore,
} from '../storage/store.interface.js';

/**
 * What the conformance suite hands a store factory: build the store with this TTL and
 * this clock, so that the suite can test expiry without waiting.
 * @publicApi
 */
export interface StoreConformanceContext {
  /** Lifetime of a value after its last `set`, in milliseconds. */
  ttlMs: number;
  /** The clock the store must use (epoch milliseconds). The suite moves it forward. */
  now: () => number;
}

/**
 * The test functions the suite registers its cases with. Jest, Vitest (with globals) and
 * Mocha provide them as globals; pass them explicitly for other runners.
 * @publicApi
 */
export interface ConformanceTestApi {
  describe: (name: string, body: () => void) => void;
  it: (name: string, body: () => Promise<void>, timeout?: number) => void;
}

/**
 * Options of {@link defineStoreConformanceTests}.
 * @publicApi
 */
export interface StoreConformanceOptions {
  /** Name of the backend, shown in test names. */
  name: string;
  /** Builds the OAuth state store under test (called once). */
  createStateStore?: (
    ctx: StoreConformanceContext,
  ) => AtProtoStateStore | Promise<AtProtoStateStore>;
  /** Builds the OAuth session store under test (called once). */
  createSessionStore?: (
    ctx: StoreConformanceContext,
  ) => AtProtoSessionStore | Promise<AtProtoSessionStore>;
  /**
   * Whether the session store implements the fenced writes of
   * `AtProtoVersionedSessionStore` (`getVersioned`, `setIfVersion`, `delIfVersion`):
   * `true` runs their cases and fails if a method is missing; `false` leaves them out. By
   * default their cases run, and pass at once for a store that has none of the three
   * methods (the module then falls back to `get/set/del`); a store with only some of them
   * fails.
   */
  fencedWrites?: boolean;
  /**
   * Whether the session store implements `getInfo` of `AtProtoSessionInfoStore`: `true`
   * runs its cases and fails if it is missing; `false` leaves them out. By default they run
   * when the store has `getInfo`.
   */
  sessionInfo?: boolean;
  /** Test functions; defaults to the global `describe` and `it`. */
  testApi?: ConformanceTestApi;
  /** Per-test timeout in milliseconds, passed to `it`. @default 30000 */
  timeoutMs?: number;
}

const TTL_MS = 60_000;

/**
 * Registers the store conformance suite: the behaviour `AtProtoModule` relies on from an
 * OAuth state or session store. Run it against your own store implementation:
 *
 * @example
 * import { defineStoreConformanceTests } from 'nestjs-atproto-auth/testing';
 * defineStoreConformanceTests({
 *   name: 'my redis store',
 *   createSessionStore: ({ ttlMs, now }) => new MySessionStore(redis, { ttlMs, now }),
 * });
 *
 * It checks: round trip, missing keys, overwrite, delete, expiry, concurrent writes to one
 * key, keys that differ only in case, values larger than 64 KiB, and (for session stores)
 * that malformed or non-ASCII DIDs and values belonging to another DID are rejected. For a
 * session store with fenced writes (see `fencedWrites`): versions grow on every write,
 * `setIfVersion` replaces only the version read and never inserts, `delIfVersion` deletes
 * only the version read, one of concurrent fenced writes of a version wins, and a session
 * deleted and written again does not take back a version of the deleted one. For a session
 * store with `getInfo` (see `sessionInfo`): it returns the plain information of what was
 * written (issuer, PDS, access expiry, end of retention, write times), and nothing for a
 * missing, deleted or expired session.
 * @publicApi
 */
export function defineStoreConformanceTests(options: StoreConformanceOptions): void {
  const api = options.testApi ?? (globalThis as unknown as ConformanceTestApi);
  if (typeof api.describe !== 'function' || typeof api.it !== 'function') {
    throw new TypeError(
      'defineStoreConformanceTests needs describe() and it(): run it inside Jest, Vitest (globals: true) or Mocha, or pass testApi.',
    );
  }
  const timeout = options.timeoutMs ?? 30_000;
  let clock = Date.now();
  const ctx: StoreConformanceContext = { ttlMs: TTL_MS, now: () => clock };
  const advance = (ms: number) => {
    clock += ms;
  };

  if (options.createStateStore) {
    const factory = options.createStateStore;
    let store: Promise<AtProtoStateStore> | undefined;
    const get = () => (store ??= Promise.resolve(factory(ctx)));
    api.describe(`${options.name}: OAuth state store conformance`, () => {
      keyValueCases(api, timeout, get, stateKey, (key, size) => stateValue(key, size), advance);
    });
  }

  if (options.createSessionStore) {
    const factory = options.createSessionStore;
    let store: Promise<AtProtoSessionStore> | undefined;
    const get = () => (store ??= Promise.resolve(factory(ctx)));
    api.describe(`${options.name}: OAuth session store conformance`, () => {
      keyValueCases(api, timeout, get, did, (key, size) => sessionValue(key, size), advance);

      api.it(
        'rejects malformed and non-ASCII DIDs with a clear error, on get, set and del',
        async () => {
          const s = await get();
          const bad = [
            '',
            'not-a-did',
            'did:plc:',
            'did:PLC:abc',
            'did:plc:ünïcode',
            'did:plc:abc def',
            `did:web:${'a'.repeat(600)}`,
          ];
          for (const key of bad) {
            await assert.rejects(() => s.get(key), /DID/, `get(${JSON.stringify(key)})`);
            await assert.rejects(
              () => s.set(key, sessionValue(key, 0)),
              /DID/,
              `set(${JSON.stringify(key)})`,
            );
            await assert.rejects(() => s.del(key), /DID/, `del(${JSON.stringify(key)})`);
          }
        },
        timeout,
      );

      api.it(
        'refuses a session whose token set belongs to another DID',
        async () => {
          const s = await get();
          const a = did();
          await assert.rejects(() => s.set(a, sessionValue(did(), 0)), /DID/);
          assert.equal(await s.get(a), undefined);
        },
        timeout,
      );
    });

    if (options.fencedWrites !== false) {
      const required = options.fencedWrites === true;
      api.describe(`${options.name}: OAuth session store fenced writes`, () => {
        fencedWriteCases(api, timeout, get, required, () => clock, advance);
      });
    }

    if (options.sessionInfo !== false) {
      const required = options.sessionInfo === true;
      api.describe(`${options.name}: OAuth session store getInfo`, () => {
        sessionInfoCases(api, timeout, get, required, () => clock, advance);
      });
    }
  }
}

function sessionInfoCases(
  api: ConformanceTestApi,
  timeout: number,
  store: () => Promise<AtProtoSessionStore>,
  required: boolean,
  clock: () => number,
  advance: (ms: number) => void,
): void {
  /** The store, or undefined when it has no getInfo and it is not required. */
  const withInfo = async (): Promise<AtProtoSessionInfoStore | undefined> => {
    const s = await store();
    if (hasSessionInfo(s)) return s;
    assert.ok(!required, 'the session store must implement getInfo');
    return undefined;
  };

  api.it(
    'getInfo: the plain information of what was written; undefined when missing',
    async () => {
      const s = await withInfo();
      if (!s) return;
      const k = did();
      assert.equal(await s.getInfo(k), undefined);
      const firstAt = clock();
      await s.set(k, sessionValue(k, 0));
      advance(1000);
      const value = sessionValue(k, 1);
      const writtenAt = clock();
      await s.set(k, value);
      const info = await s.getInfo(k);
      assert.ok(info, 'getInfo finds the session');
      const { createdAt, ...rest } = info;
      assert.deepEqual(rest, {
        did: k,
        issuer: value.tokenSet.iss,
        pdsUrl: value.tokenSet.aud,
        accessExpiresAt: new Date(value.tokenSet.expires_at!),
        expiresAt: new Date(writtenAt + TTL_MS),
        updatedAt: new Date(writtenAt),
      });
      if (createdAt !== undefined) {
        assert.deepEqual(createdAt, new Date(firstAt), 'createdAt is the first write');
      }
    },
    timeout,
  );

  api.it(
    'getInfo: a null access expiry when the token set has none',
    async () => {
      const s = await withInfo();
      if (!s) return;
      const k = did();
      const { expires_at: _, ...tokenSet } = sessionValue(k, 0).tokenSet;
      await s.set(k, { ...sessionValue(k, 0), tokenSet } as NodeSavedSession);
      assert.equal((await s.getInfo(k))?.accessExpiresAt, null);
    },
    timeout,
  );

  api.it(
    'getInfo: undefined once the session is deleted or past its retention',
    async () => {
      const s = await withInfo();
      if (!s) return;
      const deleted = did();
      await s.set(deleted, sessionValue(deleted, 0));
      await s.del(deleted);
      assert.equal(await s.getInfo(deleted), undefined);

      const expired = did();
      await s.set(expired, sessionValue(expired, 0));
      advance(TTL_MS - 1000);
      assert.ok(await s.getInfo(expired), 'still there before the TTL');
      advance(2000);
      assert.equal(await s.getInfo(expired), undefined, 'gone after the TTL, as for get');
    },
    timeout,
  );

  api.it(
    'getInfo rejects a malformed DID',
    async () => {
      const s = await withInfo();
      if (!s) return;
      await assert.rejects(() => s.getInfo('not-a-did'), /DID/);
    },
    timeout,
  );
}

function fencedWriteCases(
  api: ConformanceTestApi,
  timeout: number,
  store: () => Promise<AtProtoSessionStore>,
  required: boolean,
  clock: () => number,
  advance: (ms: number) => void,
): void {
  /** The store, or undefined when it has none of the methods and they are not required. */
  const versioned = async (): Promise<AtProtoVersionedSessionStore | undefined> => {
    const s = await store();
    if (isVersionedSessionStore(s)) return s;
    const partial = s as Partial<AtProtoVersionedSessionStore>;
    const some = [partial.getVersioned, partial.setIfVersion, partial.delIfVersion].some(
      (m) => typeof m === 'function',
    );
    assert.ok(
      !required && !some,
      'the session store must implement getVersioned, setIfVersion and delIfVersion' +
        (some ? ' (it has only some of them)' : ''),
    );
    return undefined;
  };
  const version = async (s: AtProtoVersionedSessionStore, key: string): Promise<number> => {
    const read = await s.getVersioned(key);
    assert.ok(read, `a session is stored for ${key}`);
    return read.version;
  };

  api.it(
    'getVersioned: the value, a non-negative integer version and the write time; undefined when missing',
    async () => {
      const s = await versioned();
      if (!s) return;
      const k = did();
      assert.equal(await s.getVersioned(k), undefined);
      const v = sessionValue(k, 0);
      const writtenAt = clock();
      await s.set(k, v);
      const read = await s.getVersioned(k);
      assert.ok(read);
      assert.deepEqual(read.value, v);
      assert.ok(Number.isSafeInteger(read.version) && read.version >= 0, 'integer version');
      assert.ok(read.updatedAt instanceof Date);
      assert.equal(read.updatedAt.getTime(), writtenAt, 'updatedAt is the time of the write');
    },
    timeout,
  );

  api.it(
    'every write increases the version, and setIfVersion resolves the version it wrote',
    async () => {
      const s = await versioned();
      if (!s) return;
      const k = did();
      await s.set(k, sessionValue(k, 0));
      const v1 = await version(s, k);
      advance(10);
      await s.set(k, sessionValue(k, 1));
      const v2 = await version(s, k);
      assert.ok(v2 > v1, `a set increases the version (${v1} then ${v2})`);
      advance(10);
      const v3 = await s.setIfVersion(k, sessionValue(k, 2), v2);
      assert.ok(v3 !== undefined && v3 > v2, `setIfVersion increases it (${v2} then ${v3})`);
      assert.equal(await version(s, k), v3);
      const read = await s.getVersioned(k);
      assert.equal(read?.updatedAt.getTime(), clock(), 'setIfVersion sets updatedAt');
    },
    timeout,
  );

  api.it(
    'setIfVersion replaces only the version read: a stale version is fenced out and changes nothing',
    async () => {
      const s = await versioned();
      if (!s) return;
      const k = did();
      await s.set(k, sessionValue(k, 0));
      const stale = await version(s, k);
      const current = sessionValue(k, 1);
      await s.set(k, current);
      assert.equal(await s.setIfVersion(k, sessionValue(k, 2), stale), undefined);
      assert.deepEqual(await s.get(k), current);

      const fresh = sessionValue(k, 3);
      assert.notEqual(await s.setIfVersion(k, fresh, await version(s, k)), undefined);
      assert.deepEqual(await s.get(k), fresh);
      advance(TTL_MS - 1000);
      assert.deepEqual(await s.get(k), fresh, 'setIfVersion renews the TTL like set');
    },
    timeout,
  );

  api.it(
    'setIfVersion never inserts: not for a missing session, one deleted meanwhile, or one expired',
    async () => {
      const s = await versioned();
      if (!s) return;
      const missing = did();
      assert.equal(await s.setIfVersion(missing, sessionValue(missing, 0), 0), undefined);
      assert.equal(await s.setIfVersion(missing, sessionValue(missing, 0), 1), undefined);
      assert.equal(await s.get(missing), undefined);

      const deleted = did();
      await s.set(deleted, sessionValue(deleted, 0));
      const v = await version(s, deleted);
      await s.del(deleted);
      assert.equal(await s.setIfVersion(deleted, sessionValue(deleted, 1), v), undefined);
      assert.equal(await s.get(deleted), undefined);

      const expired = did();
      await s.set(expired, sessionValue(expired, 0));
      const e = await version(s, expired);
      advance(TTL_MS + 1000);
      assert.equal(await s.setIfVersion(expired, sessionValue(expired, 1), e), undefined);
      assert.equal(await s.get(expired), undefined);
    },
    timeout,
  );

  api.it(
    'delIfVersion deletes only the version read, and resolves whether it deleted',
    async () => {
      const s = await versioned();
      if (!s) return;
      const k = did();
      await s.set(k, sessionValue(k, 0));
      const stale = await version(s, k);
      const current = sessionValue(k, 1);
      await s.set(k, current);
      assert.equal(await s.delIfVersion(k, stale), false);
      assert.deepEqual(await s.get(k), current);
      assert.equal(await s.delIfVersion(k, await version(s, k)), true);
      assert.equal(await s.get(k), undefined);
      assert.equal(await s.delIfVersion(k, stale), false);
      assert.equal(await s.delIfVersion(did(), 1), false);
    },
    timeout,
  );

  api.it(
    'of concurrent fenced writes of one version, exactly one wins',
    async () => {
      const s = await versioned();
      if (!s) return;
      const k = did();
      await s.set(k, sessionValue(k, 0));
      const v = await version(s, k);
      const values = Array.from({ length: 16 }, (_, i) => sessionValue(k, i + 1));
      const results = await Promise.all(values.map((value) => s.setIfVersion(k, value, v)));
      const winners = results.flatMap((r, i) => (r === undefined ? [] : [i]));
      assert.equal(winners.length, 1, `one winner, got ${winners.length}`);
      assert.deepEqual(await s.get(k), values[winners[0]!]);
      assert.equal(await version(s, k), results[winners[0]!]);
    },
    timeout,
  );

  api.it(
    "a session deleted and written again (a new login) does not take back the deleted one's version",
    async () => {
      const s = await versioned();
      if (!s) return;
      const k = did();
      await s.set(k, sessionValue(k, 0));
      const old = await version(s, k);
      await s.del(k);
      advance(1000); // a new login comes at least a second later
      const login = sessionValue(k, 1);
      await s.set(k, login);
      assert.notEqual(await version(s, k), old);
      assert.equal(await s.setIfVersion(k, sessionValue(k, 2), old), undefined);
      assert.equal(await s.delIfVersion(k, old), false);
      assert.deepEqual(await s.get(k), login);
    },
    timeout,
  );

  api.it(
    'rejects a version that is not a non-negative integer, a malformed DID, and a session of another DID',
    async () => {
      const s = await versioned();
      if (!s) return;
      const k = did();
      await s.set(k, sessionValue(k, 0));
      for (const bad of [-1, 1.5, Number.NaN]) {
        await assert.rejects(() => s.setIfVersion(k, sessionValue(k, 1), bad), /version/);
        await assert.rejects(() => s.delIfVersion(k, bad), /version/);
      }
      await assert.rejects(() => s.getVersioned('not-a-did'), /DID/);
      await assert.rejects(() => s.setIfVersion('not-a-did', sessionValue(k, 0), 1), /DID/);
      await assert.rejects(() => s.delIfVersion('not-a-did', 1), /DID/);
      const v = await version(s, k);
      await assert.rejects(() => s.setIfVersion(k, sessionValue(did(), 0), v), /DID/);
      assert.equal(await version(s, k), v);
    },
    timeout,
  );
}

function keyValueCases<V>(
  api: ConformanceTestApi,
  timeout: number,
  store: () => Promise<{
    get(k: string): Promise<V | undefined>;
    set(k: string, v: V): Promise<void>;
    del(k: string): Promise<void>;
  }>,
  newKey: () => string,
  value: (key: string, size: number) => V,
  advance: (ms: number) => void,
): void {
  api.it(
    'round-trips a value and returns undefined for a missing key',
    async () => {
      const s = await store();
      const k = newKey();
      assert.equal(await s.get(k), undefined);
      const v = value(k, 0);
      await s.set(k, v);
      assert.deepEqual(await s.get(k), v);
    },
    timeout,
  );

  api.it(
    'overwrites a value (upsert)',
    async () => {
      const s = await store();
      const k = newKey();
      await s.set(k, value(k, 0));
      const second = value(k, 10);
      await s.set(k, second);
      assert.deepEqual(await s.get(k), second);
    },
    timeout,
  );

  api.it(
    'deletes a value, and deleting a missing key is not an error',
    async () => {
      const s = await store();
      const k = newKey();
      await s.set(k, value(k, 0));
      await s.del(k);
      assert.equal(await s.get(k), undefined);
      await s.del(k);
      await s.del(newKey());
    },
    timeout,
  );

  api.it(
    'expires a value after its TTL, counted from the last set',
    async () => {
      const s = await store();
      const k = newKey();
      const v = value(k, 0);
      await s.set(k, v);
      advance(TTL_MS - 1000);
      assert.deepEqual(await s.get(k), v, 'still there before the TTL');
      await s.set(k, v);
      advance(TTL_MS - 1000);
      assert.deepEqual(await s.get(k), v, 'a set renews the TTL');
      advance(2000);
      assert.equal(await s.get(k), undefined, 'gone after the TTL');
    },
    timeout,
  );

  api.it(
    'survives concurrent writes to one key: every write resolves and one of them wins',
    async () => {
      const s = await store();
      const k = newKey();
      const values = Array.from({ length: 16 }, (_, i) => value(k, i));
      await Promise.all(values.map((v) => s.set(k, v)));
      const stored = await s.get(k);
      assert.ok(
        values.some((v) => isDeepStrictEqual(v, stored)),
        'the stored value is one of those written',
      );
    },
    timeout,
  );

  api.it(
    'keeps keys that differ only in case apart',
    async () => {
      const s = await store();
      const lower = newKey().toLowerCase();
      const upper = caseVariant(lower);
      assert.notEqual(lower, upper);
      const a = value(lower, 1);
      const b = value(upper, 2);
      await s.set(lower, a);
      await s.set(upper, b);
      assert.deepEqual(await s.get(lower), a);
      assert.deepEqual(await s.get(upper), b);
      await s.del(upper);
      assert.deepEqual(await s.get(lower), a);
    },
    timeout,
  );

  api.it(
    'stores a value larger than 64 KiB',
    async () => {
      const s = await store();
      const k = newKey();
      const big = value(k, 96 * 1024);
      assert.ok(JSON.stringify(big).length > 64 * 1024);
      await s.set(k, big);
      assert.deepEqual(await s.get(k), big);
    },
    timeout,
  );
}

function isDeepStrictEqual(a: unknown, b: unknown): boolean {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

/** Flips the case of the first letter that has one. */
function caseVariant(key: string): string {
  const i = [...key].findIndex((c, idx) => idx > 8 && c.toLowerCase() !== c.toUpperCase());
  const at = i === -1 ? key.search(/[a-z]/i) : i;
  return key.slice(0, at) + key.charAt(at).toUpperCase() + key.slice(at + 1);
}

function stateKey(): string {
  return randomBytes(16).toString('base64url');
}

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';
function did(): string {
  // did:web keeps case-variant keys valid DIDs; did:plc identifiers are lowercase base32.
  const id = Array.from(randomBytes(24), (b) => B32[b % 32]).join('');
  return `did:web:conformance-${id}.example`;
}

function filler(size: number, seed: string): string {
  return size === 0 ? '' : `${seed}:`.repeat(Math.ceil(size / (seed.length + 1))).slice(0, size);
}

// A fresh P-256 key per run: the fixtures never contain a fixed private key.
const dpopJwk = {
  ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
  kid: 'conformance',
} as unknown as NodeSavedState['dpopJwk'];

function stateValue(key: string, size: number): NodeSavedState {
  return {
    iss: 'https://pds.conformance.example',
    dpopJwk,
    authMethod: { method: 'private_key_jwt', kid: 'k1' },
    verifier: `verifier-${key}-${size}`,
    appState: filler(size, `app-state-${key}`),
  };
}

function sessionValue(sub: string, size: number): NodeSavedSession {
  return {
    dpopJwk,
    authMethod: { method: 'private_key_jwt', kid: 'k1' },
    tokenSet: {
      iss: 'https://pds.conformance.example',
      sub: sub as NodeSavedSession['tokenSet']['sub'],
      aud: 'https://pds.conformance.example',
      scope:
        `atproto ${filler(size, 'transition:generic')}`.trim() as NodeSavedSession['tokenSet']['scope'],
      access_token: `access-${size}-${randomBytes(8).toString('hex')}`,
      refresh_token: `refresh-${size}-${randomBytes(8).toString('hex')}`,
      token_type: 'DPoP',
      expires_at: new Date(Date.now() + 3_600_000).toISOString(),
    },
  };
}
