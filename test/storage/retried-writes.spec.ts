/**
 * Writes retried after an ambiguous failure: the connection is lost after the statement
 * committed (the reply never reaches the driver), so the store retries a write that already
 * happened. The result must say what happened: a login whose app-session INSERT landed is a
 * success, a revocation that landed is "revoked", a fenced session write that landed
 * resolves its new version. A TCP proxy between the DataSource and the database forwards
 * the statement, swallows the server's reply and cuts the connection.
 */
import { randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import {
  KeyRing,
  installKeyRing,
  AtProtoStoreError,
  type AppSessionRecord,
  isTransientDatabaseError,
  type TransientRetryOptions,
  TypeOrmAppSessionStore,
  reencrypt,
  TypeOrmSessionStore,
  TypeOrmStateStore,
} from 'nestjs-atproto-auth';
import { TypeOrmCleanupTarget } from '../../lib/cleanup/typeorm-cleanup.target.js';
import { randomKey } from '../support/key-ring.js';
import { lostReplyDatabase } from '../support/lost-reply-database.js';
import { p, q, randomDid, sessionValue, stateValue } from '../support/raw-sql.js';
import type { CuttingProxy } from './fault-proxy.js';

const KEYS = { k1: randomKey(), k2: randomKey() };
// Writes use k1; reencrypt() below moves values to k2, and reads know both.
installKeyRing(new KeyRing({ activeKeyId: 'k1', keys: KEYS }));

const HOUR = 3_600_000;

function record(did: string, now = Date.now()): AppSessionRecord {
  return {
    id: randomBytes(32).toString('hex'),
    did,
    createdAt: new Date(now),
    expiresAt: new Date(now + 24 * HOUR),
    lastSeenAt: new Date(now),
    revokedAt: null,
    userAgent: 'retried-writes',
  };
}

describe.each(['postgres', 'mariadb'] as const)(
  'writes retried after a lost reply on %s',
  (dialect) => {
    let proxy: CuttingProxy;
    let viaProxy: DataSource;
    let direct: DataSource;
    let retry: TransientRetryOptions;
    let retried: unknown[];
    let close: (() => Promise<void>) | undefined;
    const t = (name: string) => q(dialect, name);

    beforeAll(async () => {
      ({ direct, viaProxy, proxy, retry, retried, close } = await lostReplyDatabase(
        dialect,
        'retried_writes',
      ));
    });
    afterAll(async () => {
      await close?.();
    });
    beforeEach(() => {
      retried.length = 0;
    });

    async function appRows(id: string): Promise<Array<{ did: string }>> {
      return (await direct.query(
        `SELECT ${t('did')} AS ${t('did')} FROM ${t('atproto_app_session')} WHERE ${t('id')} = ${p(dialect, 1)}`,
        [id],
      )) as Array<{ did: string }>;
    }

    it('create: the INSERT committed but its reply was lost; the retry finds our row and login succeeds', async () => {
      const store = new TypeOrmAppSessionStore(viaProxy, { retry });
      const r = record(randomDid());
      const cut = proxy.cutNext(/INSERT INTO .atproto_app_session/, 'after-reply');
      await store.create(r);
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(retried.every(isTransientDatabaseError)).toBe(true);
      expect(await appRows(r.id)).toEqual([{ did: r.did }]);
      expect(await store.get(r.id)).toEqual(r);
    });

    it('create: on a retry, a row with our id but another DID is not ours: still an error', async () => {
      const store = new TypeOrmAppSessionStore(viaProxy, { retry });
      const r = record(randomDid());
      const intruder = randomDid();
      // The first attempt never reaches the server; before the retry, another writer inserts
      // a row with the same id for another DID.
      const cut = proxy.cutNext(/INSERT INTO .atproto_app_session/, 'before-request', async () => {
        await new TypeOrmAppSessionStore(direct).create({ ...r, did: intruder });
      });
      const error = await store.create(r).then(
        () => undefined,
        (e: unknown) => e,
      );
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(error).toBeInstanceOf(AtProtoStoreError);
      expect((error as Error).message).toMatch(/already exists/);
      expect(await appRows(r.id)).toEqual([{ did: intruder }]);
    });

    it('create: a duplicate id on the first attempt is an error (AtProtoStoreError), never a success', async () => {
      const store = new TypeOrmAppSessionStore(viaProxy, { retry });
      const r = record(randomDid());
      await store.create(r);
      await expect(store.create(r)).rejects.toBeInstanceOf(AtProtoStoreError);
      expect(retried).toEqual([]);
    });

    it('revoke: the UPDATE committed but its reply was lost; revoke still resolves true', async () => {
      const store = new TypeOrmAppSessionStore(viaProxy, { retry });
      const r = record(randomDid());
      await store.create(r);
      const at = new Date(Date.now() + 1);
      const cut = proxy.cutNext(/UPDATE .atproto_app_session. SET .revoked_at/, 'after-reply');
      expect(await store.revoke(r.id, at)).toBe(true);
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect((await store.get(r.id))?.revokedAt).toEqual(at);
      // A second revocation (another timestamp) is not ours.
      expect(await store.revoke(r.id, new Date(at.getTime() + 1))).toBe(false);
    });

    it('revokeAllForDid: the UPDATE committed but its reply was lost; resolves the sessions it revoked', async () => {
      const store = new TypeOrmAppSessionStore(viaProxy, { retry });
      const did = randomDid();
      await store.create(record(did));
      await store.create(record(did));
      const at = new Date(Date.now() + 2);
      const cut = proxy.cutNext(/UPDATE .atproto_app_session. SET .revoked_at/, 'after-reply');
      expect(await store.revokeAllForDid(did, at)).toBe(2);
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(await store.listForDid(did)).toEqual([]);
    });

    it('setIfVersion: the UPDATE committed but its reply was lost; resolves the new version, not "fenced out"', async () => {
      const store = new TypeOrmSessionStore(viaProxy, { ttlMs: HOUR, retry });
      const did = randomDid();
      await store.set(did, sessionValue(did));
      const { version } = (await store.getVersioned(did))!;
      const next = sessionValue(did);
      const cut = proxy.cutNext(/UPDATE .atproto_oauth_session. SET/, 'after-reply');
      expect(await store.setIfVersion(did, next, version)).toBe(version + 1);
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(await store.getVersioned(did)).toMatchObject({ value: next, version: version + 1 });
    });

    it('delIfVersion: the DELETE committed but its reply was lost; resolves true', async () => {
      const store = new TypeOrmSessionStore(viaProxy, { ttlMs: HOUR, retry });
      const did = randomDid();
      await store.set(did, sessionValue(did));
      const { version } = (await store.getVersioned(did))!;
      const cut = proxy.cutNext(/DELETE FROM .atproto_oauth_session/, 'after-reply');
      expect(await store.delIfVersion(did, version)).toBe(true);
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(await store.get(did)).toBeUndefined();
    });

    it('cleanup: a DELETE that committed but lost its reply still counts its rows (the batch is not reported empty)', async () => {
      const now = Date.now();
      const states = new TypeOrmStateStore(direct, { ttlMs: HOUR, now: () => now - 2 * HOUR });
      for (let i = 0; i < 5; i++) await states.set(`retried-cleanup-${i}`, stateValue());
      const target = new TypeOrmCleanupTarget(viaProxy, retry);
      const cut = proxy.cutNext(/DELETE FROM .atproto_oauth_state/, 'after-reply');
      expect(await target.deleteExpiredStates(now, 100)).toBe(5);
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(await target.deleteExpiredStates(now, 100)).toBe(0);
    });

    it('reencrypt: a rewrite that committed but lost its reply counts as rewritten, not skipped', async () => {
      const store = new TypeOrmSessionStore(direct, { ttlMs: HOUR });
      const did = randomDid();
      const value = sessionValue(did);
      await store.set(did, value);
      const next = new KeyRing({ activeKeyId: 'k2', keys: KEYS });
      const cut = proxy.cutNext(/UPDATE .atproto_oauth_session. SET .token_set/, 'after-reply');
      const result = await reencrypt(viaProxy, { keyRing: next });
      await cut;
      const counts = result.tables.atproto_oauth_session;
      expect(result.failures).toEqual([]);
      expect(counts.skipped).toBe(0);
      expect(counts.rewritten).toBe(counts.scanned);
      expect(await store.get(did)).toEqual(value);
    });
  },
);
