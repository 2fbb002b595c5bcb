/**
 * The bot-session store's writes retried after an ambiguous failure: the connection is lost
 * after the statement committed (a TCP proxy forwards it, swallows the reply and cuts), so
 * the store runs again a write that already happened. Each must answer what its first
 * attempt did: a login is saved once, a refresh that landed resolves its new version (not
 * "fenced out", which would log a lost lock and drop the refreshed tokens' event), a logout
 * or an ended session that was deleted says so, and an expired session deleted by the first
 * attempt is reported deleted, so that its end is reported. A write another holder made
 * first is never taken for this call's.
 */
import type { DataSource } from 'typeorm';
import { isTransientDatabaseError, type TransientRetryOptions } from 'nestjs-atproto-auth';
import { type StoredBotSession, TypeOrmBotSessionStore } from '../../lib/bots/bot-session.store.js';
import { installTestKeyRing } from '../support/key-ring.js';
import { lostReplyDatabase } from '../support/lost-reply-database.js';
import { p, q, randomDid } from '../support/raw-sql.js';
import type { CuttingProxy } from '../storage/fault-proxy.js';

installTestKeyRing();

const DAY = 86_400_000;
/** One instant for every session written, so that a session compares equal to itself. */
const NOW = Date.now();

function session(did: string, n: number, expiresAt = NOW + 90 * DAY): StoredBotSession {
  return {
    did,
    handle: 'robot.example.com',
    pdsUrl: 'https://pds.example.com',
    accessJwt: `eyJhbGciOiJIUzI1NiJ9.access-${n}.sig`,
    refreshJwt: `eyJhbGciOiJIUzI1NiJ9.refresh-${n}.sig`,
    accessExpiresAt: NOW + 7_200_000,
    expiresAt,
  };
}

describe.each(['postgres', 'mariadb'] as const)(
  'bot-session writes retried after a lost reply on %s',
  (dialect) => {
    let proxy: CuttingProxy;
    let viaProxy: DataSource;
    let direct: DataSource;
    let retry: TransientRetryOptions;
    let retried: unknown[];
    let close: (() => Promise<void>) | undefined;
    /** The store under test, whose statements go through the proxy. */
    let store: TypeOrmBotSessionStore;
    /** Another instance's store, on its own connection. */
    let other: TypeOrmBotSessionStore;
    const t = (name: string) => q(dialect, name);

    beforeAll(async () => {
      ({ direct, viaProxy, proxy, retry, retried, close } = await lostReplyDatabase(
        dialect,
        'bot_retried',
      ));
      store = new TypeOrmBotSessionStore(viaProxy, { retry });
      other = new TypeOrmBotSessionStore(direct);
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

    async function rowCount(did: string): Promise<number> {
      const rows = (await direct.query(
        `SELECT ${t('did')} FROM ${t('atproto_bot_session')} WHERE ${t('did')} = ${p(dialect, 1)}`,
        [did],
      )) as unknown[];
      return rows.length;
    }

    it('set (a first login): the INSERT committed but its reply was lost; the session is saved once', async () => {
      const did = randomDid();
      const cut = proxy.cutNext(/INSERT INTO .atproto_bot_session/, 'after-reply');
      await store.set(session(did, 1));
      await cut;
      expectRetried();
      expect(await rowCount(did)).toBe(1);
      expect((await other.get(did))?.value).toEqual(session(did, 1));
    });

    it('set (a login over a stored session): the UPDATE committed but its reply was lost; the new session is stored', async () => {
      const did = randomDid();
      await other.set(session(did, 1));
      const before = (await other.get(did))!.version;
      const cut = proxy.cutNext(/UPDATE .atproto_bot_session. SET/, 'after-reply');
      await store.set(session(did, 2));
      await cut;
      expectRetried();
      const after = (await other.get(did))!;
      expect(after.value).toEqual(session(did, 2));
      // A holder that read the replaced session is fenced out.
      expect(after.version).toBeGreaterThan(before);
      expect(await other.setIfVersion(session(did, 3), before)).toBeUndefined();
    });

    it('setIfVersion (a refresh): the UPDATE committed but its reply was lost; resolves the new version, not "fenced out"', async () => {
      const did = randomDid();
      await other.set(session(did, 1));
      const { version } = (await other.get(did))!;
      const cut = proxy.cutNext(/UPDATE .atproto_bot_session. SET/, 'after-reply');
      expect(await store.setIfVersion(session(did, 2), version)).toBe(version + 1);
      await cut;
      expectRetried();
      expect(await other.get(did)).toEqual({ value: session(did, 2), version: version + 1 });
      // Written once: a second write at the version read is fenced out.
      expect(await other.setIfVersion(session(did, 3), version)).toBeUndefined();
    });

    it('setIfVersion: on a retry, a refresh another holder wrote first at that version is not this call’s', async () => {
      const did = randomDid();
      await other.set(session(did, 1));
      const { version } = (await other.get(did))!;
      // The first attempt never reaches the server; meanwhile another holder of the version
      // writes its own refresh. The row is then at version + 1, as ours would be, with
      // other JWTs.
      const cut = proxy.cutNext(/UPDATE .atproto_bot_session. SET/, 'before-request', async () => {
        expect(await other.setIfVersion(session(did, 9), version)).toBe(version + 1);
      });
      expect(await store.setIfVersion(session(did, 2), version)).toBeUndefined();
      await cut;
      expectRetried();
      expect((await other.get(did))?.value).toEqual(session(did, 9));
    });

    it('setIfVersion: on a retry, a session deleted meanwhile stays deleted', async () => {
      const did = randomDid();
      await other.set(session(did, 1));
      const { version } = (await other.get(did))!;
      const cut = proxy.cutNext(/UPDATE .atproto_bot_session. SET/, 'before-request', async () => {
        expect(await other.delIfVersion(did, version)).toBe(true);
      });
      expect(await store.setIfVersion(session(did, 2), version)).toBeUndefined();
      await cut;
      expectRetried();
      expect(await rowCount(did)).toBe(0);
    });

    it('delIfVersion (a logout): the DELETE committed but its reply was lost; resolves true', async () => {
      const did = randomDid();
      await other.set(session(did, 1));
      const { version } = (await other.get(did))!;
      const cut = proxy.cutNext(/DELETE FROM .atproto_bot_session/, 'after-reply');
      expect(await store.delIfVersion(did, version)).toBe(true);
      await cut;
      expectRetried();
      expect(await rowCount(did)).toBe(0);
    });

    it('delIfVersion: on a retry, a session refreshed meanwhile by another holder is kept (false)', async () => {
      const did = randomDid();
      await other.set(session(did, 1));
      const { version } = (await other.get(did))!;
      const cut = proxy.cutNext(/DELETE FROM .atproto_bot_session/, 'before-request', async () => {
        expect(await other.setIfVersion(session(did, 2), version)).toBe(version + 1);
      });
      expect(await store.delIfVersion(did, version)).toBe(false);
      await cut;
      expectRetried();
      expect((await other.get(did))?.value).toEqual(session(did, 2));
    });

    it('deleteExpired: the DELETE committed but its reply was lost; resolves true, so that the end is reported', async () => {
      const did = randomDid();
      await other.set(session(did, 1, NOW - 1));
      const cut = proxy.cutNext(/DELETE FROM .atproto_bot_session/, 'after-reply');
      expect(await store.deleteExpired(did)).toBe(true);
      await cut;
      expectRetried();
      expect(await rowCount(did)).toBe(0);
      // Once: nothing is left to report.
      expect(await other.deleteExpired(did)).toBe(false);
    });

    it('deleteExpired: on a retry, a session logged in again meanwhile is not expired any more: kept (false)', async () => {
      const did = randomDid();
      await other.set(session(did, 1, NOW - 1));
      const cut = proxy.cutNext(/DELETE FROM .atproto_bot_session/, 'before-request', () =>
        other.set(session(did, 2)),
      );
      expect(await store.deleteExpired(did)).toBe(false);
      await cut;
      expectRetried();
      expect((await other.get(did))?.value).toEqual(session(did, 2));
    });
  },
);
