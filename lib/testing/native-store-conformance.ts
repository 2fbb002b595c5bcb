import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type {
  NativeCodeRecord,
  NativeRefreshFamilyRecord,
  NativeTokenStore,
} from '../native/native-store.interface.js';
import type { AppSessionRecord, AppSessionStore } from '../storage/store.interface.js';
import type { ConformanceTestApi } from './store-conformance.js';

/**
 * What {@link defineNativeStoreConformanceTests} needs: a native store, a second one on
 * the same storage (standing for a second app instance; the same object for a store that
 * lives in one process), and the app-session store it shares its storage with.
 * @internal
 */
export interface NativeStoreConformanceOptions {
  name: string;
  createStores: () => Promise<{
    store: NativeTokenStore;
    second: NativeTokenStore;
    appSessions: AppSessionStore;
  }>;
  testApi?: ConformanceTestApi;
  timeoutMs?: number;
}

const MINUTE = 60_000;

/**
 * Registers the cases every native store must pass: a code is consumed once, only with its
 * own challenge and redirect URI, never after expiry, and by one of concurrent consumers
 * (two instances); a family rotates only from its current token, by one of concurrent
 * rotations, never once revoked; values are compared byte for byte; cleanup deletes exactly
 * what has ended, in batches.
 * @internal
 */
export function defineNativeStoreConformanceTests(options: NativeStoreConformanceOptions): void {
  const api = options.testApi ?? (globalThis as unknown as ConformanceTestApi);
  const timeout = options.timeoutMs ?? 30_000;
  let stores: ReturnType<NativeStoreConformanceOptions['createStores']> | undefined;
  const get = () => (stores ??= options.createStores());
  const it = (name: string, body: () => Promise<void>) => api.it(name, body, timeout);

  api.describe(`${options.name}: native store conformance`, () => {
    it('consumes a code once, and hands back what it was issued for', async () => {
      const { store } = await get();
      const now = Date.now();
      const { record } = code(now);
      await store.createCode(record);
      const at = new Date(now + 1000);
      const consumed = await store.consumeCode(record.id, binding(record), at);
      assert.deepEqual(consumed, { ...record, usedAt: at });
      assert.equal(
        await store.consumeCode(record.id, binding(record), new Date(now + 2000)),
        undefined,
      );
    });

    it('refuses a code with another challenge or redirect URI and leaves it usable', async () => {
      const { store } = await get();
      const now = Date.now();
      const { record } = code(now);
      await store.createCode(record);
      const at = new Date(now + 1000);
      const otherChallenge = challengeOf(randomBytes(32).toString('base64url'));
      assert.equal(
        await store.consumeCode(
          record.id,
          { ...binding(record), codeChallenge: otherChallenge },
          at,
        ),
        undefined,
      );
      assert.equal(
        await store.consumeCode(
          record.id,
          { ...binding(record), redirectUri: 'com.example.app:/other' },
          at,
        ),
        undefined,
      );
      // Byte for byte: a challenge differing only in case is another challenge.
      assert.equal(
        await store.consumeCode(
          record.id,
          { ...binding(record), codeChallenge: swapCase(record.codeChallenge) },
          at,
        ),
        undefined,
      );
      assert.equal(await store.hasPendingCode(record.did, at), true);
      assert.ok(await store.consumeCode(record.id, binding(record), at));
    });

    it('refuses an expired, unknown or malformed code', async () => {
      const { store } = await get();
      const now = Date.now();
      const { record } = code(now);
      await store.createCode(record);
      assert.equal(
        await store.consumeCode(record.id, binding(record), record.expiresAt),
        undefined,
      );
      assert.equal(
        await store.consumeCode(sha256Hex('unknown'), binding(record), new Date(now)),
        undefined,
      );
      assert.equal(await store.consumeCode('not-an-id', binding(record), new Date(now)), undefined);
    });

    it('lets one of concurrent consumers on two instances have a code', async () => {
      const { store, second } = await get();
      const now = Date.now();
      const { record } = code(now);
      await store.createCode(record);
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          (i % 2 ? second : store).consumeCode(record.id, binding(record), new Date(now + i + 1)),
        ),
      );
      assert.equal(results.filter((r) => r !== undefined).length, 1);
    });

    it('refuses a second code with the same id', async () => {
      const { store } = await get();
      const { record } = code(Date.now());
      await store.createCode(record);
      await assert.rejects(
        () => store.createCode({ ...record, createdAt: new Date(record.createdAt.getTime() + 1) }),
        /already exists/,
      );
    });

    it('says whether a DID has a login under way: an unused, unexpired code', async () => {
      const { store } = await get();
      const now = Date.now();
      const { record } = code(now);
      assert.equal(await store.hasPendingCode(record.did, new Date(now)), false);
      await store.createCode(record);
      assert.equal(await store.hasPendingCode(record.did, new Date(now)), true);
      assert.equal(await store.hasPendingCode(record.did, record.expiresAt), false);
      await store.consumeCode(record.id, binding(record), new Date(now + 1));
      assert.equal(await store.hasPendingCode(record.did, new Date(now + 2)), false);
    });

    it('deletes expired codes only, at most a batch at a time', async () => {
      const { store } = await get();
      // A year back, so that the codes of the other cases (issued now) have not expired then.
      const base = Date.now() - 365 * 24 * 60 * MINUTE;
      const expired = [code(base - 2 * MINUTE), code(base - 2 * MINUTE), code(base - 2 * MINUTE)];
      const live = code(base);
      for (const c of [...expired, live]) await store.createCode(c.record);
      assert.equal(await store.deleteExpiredCodes(base, 2), 2);
      assert.equal(await store.deleteExpiredCodes(base, 10), 1);
      assert.equal(await store.deleteExpiredCodes(base, 10), 0);
      assert.ok(await store.consumeCode(live.record.id, binding(live.record), new Date(base)));
      for (const c of expired) {
        assert.equal(
          await store.consumeCode(c.record.id, binding(c.record), new Date(base - 3 * MINUTE)),
          undefined,
        );
      }
    });

    it('creates and reads a refresh family', async () => {
      const { store } = await get();
      const f = family(Date.now());
      assert.equal(await store.getFamily(f.id), undefined);
      await store.createFamily(f);
      assert.deepEqual(await store.getFamily(f.id), f);
      await assert.rejects(() => store.createFamily({ ...f, currentJti: jti() }), /already exists/);
    });

    it('rotates a family only from its current token, and not once revoked', async () => {
      const { store } = await get();
      const now = Date.now();
      const f = family(now);
      await store.createFamily(f);
      const next = jti();
      const at = new Date(now + 1000);
      assert.equal(await store.rotateFamily(f.id, swapCase(f.currentJti), jti(), at), false);
      assert.equal(await store.rotateFamily(f.id, f.currentJti, next, at), true);
      assert.deepEqual(await store.getFamily(f.id), {
        ...f,
        previousJti: f.currentJti,
        currentJti: next,
        rotatedAt: at,
      });
      // The previous token no longer rotates.
      assert.equal(
        await store.rotateFamily(f.id, f.currentJti, jti(), new Date(now + 2000)),
        false,
      );
      assert.equal(await store.revokeFamily(f.id, new Date(now + 3000)), true);
      assert.equal(await store.revokeFamily(f.id, new Date(now + 4000)), false);
      assert.equal(await store.rotateFamily(f.id, next, jti(), new Date(now + 5000)), false);
      const row = await store.getFamily(f.id);
      assert.equal(row?.currentJti, next);
      assert.equal(row?.revokedAt?.getTime(), now + 3000);
    });

    it('lets one of concurrent rotations of one token on two instances win', async () => {
      const { store, second } = await get();
      const now = Date.now();
      const f = family(now);
      await store.createFamily(f);
      const nexts = Array.from({ length: 6 }, () => jti());
      const results = await Promise.all(
        nexts.map((n, i) =>
          (i % 2 ? second : store).rotateFamily(f.id, f.currentJti, n, new Date(now + 1)),
        ),
      );
      assert.equal(results.filter(Boolean).length, 1);
      const winner = nexts[results.indexOf(true)];
      assert.equal((await second.getFamily(f.id))?.currentJti, winner);
    });

    it('deletes ended families (expired, revoked past the cutoff, app session gone), at most a batch at a time', async () => {
      const { store, appSessions } = await get();
      // A year back: the families of the other cases (issued now) have not expired then,
      // though those without an app session count as ended, which the batch cap allows.
      const base = Date.now() - 365 * 24 * 60 * MINUTE;
      const withSession = async (f: NativeRefreshFamilyRecord) => {
        await appSessions.create(appSession(f));
        await store.createFamily(f);
        return f;
      };
      const expired = await withSession({ ...family(base), expiresAt: new Date(base - 1) });
      const revokedLongAgo = await withSession({
        ...family(base),
        revokedAt: new Date(base - 10 * MINUTE),
      });
      const revokedJustNow = await withSession({ ...family(base), revokedAt: new Date(base) });
      const live = await withSession(family(base));
      const orphan = family(base);
      await store.createFamily(orphan);
      const cutoffs = { now: base, revokedBefore: base - 5 * MINUTE };
      let deleted = await store.deleteEndedFamilies(cutoffs, 2);
      assert.equal(deleted, 2);
      for (let n; (n = await store.deleteEndedFamilies(cutoffs, 2)) > 0;) deleted += n;
      for (const gone of [expired, revokedLongAgo, orphan]) {
        assert.equal(await store.getFamily(gone.id), undefined, 'an ended family is deleted');
      }
      for (const kept of [revokedJustNow, live]) {
        assert.ok(await store.getFamily(kept.id), 'a family that has not ended is kept');
      }
    });
  });
}

function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

function challengeOf(verifier: string): string {
  return createHash('sha256').update(verifier).digest('base64url');
}

function jti(): string {
  return randomBytes(32).toString('base64url');
}

function did(): string {
  return `did:plc:${randomBytes(12).toString('hex')}`;
}

function swapCase(value: string): string {
  return [...value]
    .map((c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase()))
    .join('');
}

function code(now: number): { code: string; record: NativeCodeRecord } {
  const value = randomBytes(32).toString('base64url');
  return {
    code: value,
    record: {
      id: sha256Hex(value),
      did: did(),
      redirectUri: 'com.example.app:/oauth/callback',
      codeChallenge: challengeOf(randomBytes(32).toString('base64url')),
      createdAt: new Date(now),
      expiresAt: new Date(now + MINUTE),
      usedAt: null,
    },
  };
}

function binding(record: NativeCodeRecord) {
  return { codeChallenge: record.codeChallenge, redirectUri: record.redirectUri };
}

function family(now: number): NativeRefreshFamilyRecord {
  return {
    id: sha256Hex(randomBytes(32).toString('base64url')),
    did: did(),
    currentJti: jti(),
    previousJti: null,
    rotatedAt: new Date(now),
    createdAt: new Date(now),
    expiresAt: new Date(now + 30 * 24 * 60 * MINUTE),
    revokedAt: null,
  };
}

function appSession(f: NativeRefreshFamilyRecord): AppSessionRecord {
  return {
    id: f.id,
    did: f.did,
    createdAt: f.createdAt,
    expiresAt: f.expiresAt,
    lastSeenAt: f.createdAt,
    revokedAt: null,
    userAgent: null,
  };
}
