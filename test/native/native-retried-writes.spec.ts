/**
 * The native store's writes retried after an ambiguous failure: the connection is lost
 * after the statement committed (a TCP proxy forwards it, swallows the reply and cuts), so
 * the store runs a write again that already happened. Each must answer what the first
 * attempt did: a consumed code is consumed by this call, a rotation that landed is this
 * call's, and a change someone else made first is not.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { isTransientDatabaseError, type TransientRetryOptions } from 'nestjs-atproto-auth';
import type {
  NativeCodeRecord,
  NativeRefreshFamilyRecord,
} from '../../lib/native/native-store.interface.js';
import { TypeOrmNativeStore } from '../../lib/storage/typeorm/typeorm-native.store.js';
import { lostReplyDatabase } from '../support/lost-reply-database.js';
import type { CuttingProxy } from '../storage/fault-proxy.js';
import { randomDid } from './support/native-world.js';

const MINUTE = 60_000;
const sha256Hex = (v: string) => createHash('sha256').update(v).digest('hex');
const jti = () => randomBytes(32).toString('base64url');

function code(now = Date.now()): NativeCodeRecord {
  return {
    id: sha256Hex(randomBytes(32).toString('base64url')),
    did: randomDid(),
    redirectUri: 'com.example.app:/oauth/callback',
    codeChallenge: randomBytes(32).toString('base64url').slice(0, 43),
    createdAt: new Date(now),
    expiresAt: new Date(now + MINUTE),
    usedAt: null,
  };
}

function family(now = Date.now()): NativeRefreshFamilyRecord {
  return {
    id: sha256Hex(randomBytes(32).toString('base64url')),
    did: randomDid(),
    currentJti: jti(),
    previousJti: null,
    rotatedAt: new Date(now),
    createdAt: new Date(now),
    expiresAt: new Date(now + 60 * MINUTE),
    revokedAt: null,
  };
}

const binding = (c: NativeCodeRecord) => ({
  codeChallenge: c.codeChallenge,
  redirectUri: c.redirectUri,
});

describe.each(['postgres', 'mariadb'] as const)(
  'native writes retried after a lost reply on %s',
  (dialect) => {
    let proxy: CuttingProxy;
    let viaProxy: DataSource;
    let direct: DataSource;
    let retry: TransientRetryOptions;
    let retried: unknown[];
    let close: (() => Promise<void>) | undefined;
    let store: TypeOrmNativeStore;
    let other: TypeOrmNativeStore;

    beforeAll(async () => {
      ({ direct, viaProxy, proxy, retry, retried, close } = await lostReplyDatabase(
        dialect,
        'native_retried',
      ));
      store = new TypeOrmNativeStore(viaProxy, { retry });
      other = new TypeOrmNativeStore(direct);
    });
    afterAll(async () => {
      await close?.();
    });
    beforeEach(() => {
      retried.length = 0;
    });

    function expectRetried(): void {
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(retried.every(isTransientDatabaseError)).toBe(true);
    }

    it('createCode: the INSERT committed but its reply was lost; the retry finds its own row', async () => {
      const c = code();
      const cut = proxy.cutNext(/INSERT INTO .atproto_native_code/, 'after-reply');
      await store.createCode(c);
      await cut;
      expectRetried();
      expect(await other.hasPendingCode(c.did, new Date())).toBe(true);
    });

    it('createCode: on a retry, a row with its id written by another is not its own: an error', async () => {
      const c = code();
      const cut = proxy.cutNext(/INSERT INTO .atproto_native_code/, 'before-request', () =>
        other.createCode({ ...c, did: randomDid() }),
      );
      await expect(store.createCode(c)).rejects.toThrow(/already exists/);
      await cut;
      expectRetried();
    });

    it('consumeCode: the UPDATE committed but its reply was lost; the code is consumed by this call', async () => {
      const c = code();
      await other.createCode(c);
      const at = new Date(Date.now() + 1);
      const cut = proxy.cutNext(/UPDATE .atproto_native_code. SET .used_at/, 'after-reply');
      expect(await store.consumeCode(c.id, binding(c), at)).toEqual({ ...c, usedAt: at });
      await cut;
      expectRetried();
      expect(await other.consumeCode(c.id, binding(c), new Date(at.getTime() + 1))).toBeUndefined();
    });

    it('consumeCode: on a retry, a code another exchange consumed first is not this call’s', async () => {
      const c = code();
      await other.createCode(c);
      const at = new Date(Date.now() + 1);
      const cut = proxy.cutNext(
        /UPDATE .atproto_native_code. SET .used_at/,
        'before-request',
        async () => {
          expect(
            await other.consumeCode(c.id, binding(c), new Date(at.getTime() + 5)),
          ).toBeDefined();
        },
      );
      expect(await store.consumeCode(c.id, binding(c), at)).toBeUndefined();
      await cut;
      expectRetried();
    });

    it('createFamily: the INSERT committed but its reply was lost; the retry finds its own row', async () => {
      const f = family();
      const cut = proxy.cutNext(/INSERT INTO .atproto_native_refresh_family/, 'after-reply');
      await store.createFamily(f);
      await cut;
      expectRetried();
      expect(await other.getFamily(f.id)).toEqual(f);
    });

    it('rotateFamily: the UPDATE committed but its reply was lost; the rotation is this call’s', async () => {
      const f = family();
      await other.createFamily(f);
      const next = jti();
      const cut = proxy.cutNext(
        /UPDATE .atproto_native_refresh_family. SET .previous_jti/,
        'after-reply',
      );
      expect(await store.rotateFamily(f.id, f.currentJti, next, new Date())).toBe(true);
      await cut;
      expectRetried();
      expect((await other.getFamily(f.id))?.currentJti).toBe(next);
    });

    it('rotateFamily: on a retry, a rotation made first by another instance is not this call’s', async () => {
      const f = family();
      await other.createFamily(f);
      const theirs = jti();
      const cut = proxy.cutNext(
        /UPDATE .atproto_native_refresh_family. SET .previous_jti/,
        'before-request',
        async () => {
          expect(await other.rotateFamily(f.id, f.currentJti, theirs, new Date())).toBe(true);
        },
      );
      expect(await store.rotateFamily(f.id, f.currentJti, jti(), new Date())).toBe(false);
      await cut;
      expectRetried();
      expect((await other.getFamily(f.id))?.currentJti).toBe(theirs);
    });

    it('revokeFamily: the UPDATE committed but its reply was lost; resolves true', async () => {
      const f = family();
      await other.createFamily(f);
      const at = new Date(Date.now() + 1);
      const cut = proxy.cutNext(
        /UPDATE .atproto_native_refresh_family. SET .revoked_at/,
        'after-reply',
      );
      expect(await store.revokeFamily(f.id, at)).toBe(true);
      await cut;
      expectRetried();
      expect((await other.getFamily(f.id))?.revokedAt).toEqual(at);
      expect(await store.revokeFamily(f.id, new Date(at.getTime() + 1))).toBe(false);
    });

    it('deleteExpiredCodes: a DELETE that committed but lost its reply still counts its rows', async () => {
      const base = Date.now() - 24 * 60 * MINUTE;
      for (let i = 0; i < 4; i++) await other.createCode(code(base));
      const cut = proxy.cutNext(/DELETE FROM .atproto_native_code/, 'after-reply');
      expect(await store.deleteExpiredCodes(base + 2 * MINUTE, 100)).toBe(4);
      await cut;
      expectRetried();
      expect(await store.deleteExpiredCodes(base + 2 * MINUTE, 100)).toBe(0);
    });
  },
);
