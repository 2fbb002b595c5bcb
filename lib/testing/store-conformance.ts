import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node';
import type { AtProtoSessionStore, AtProtoStateStore } from '../storage/store.interface.js';

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
 * that malformed or non-ASCII DIDs and values belonging to another DID are rejected.
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
  }
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
