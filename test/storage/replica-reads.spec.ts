/**
 * Reads under TypeORM `replication`: every store read and every cleanup select goes to the
 * primary. The replica here is a second database, migrated and left empty: it answers what
 * a lagging replica answers for a row written a moment before (nothing), so a read that
 * reaches it shows up as a missing row.
 */
import { randomBytes } from 'node:crypto';
import {
  KeyRing,
  installKeyRing,
  AtProtoAppSessionEntity,
  reencrypt,
  TypeOrmAppSessionStore,
  TypeOrmSessionStore,
  TypeOrmStateStore,
} from 'nestjs-atproto-auth';
import { TypeOrmCleanupTarget } from '../../lib/cleanup/typeorm-cleanup.target.js';
import { useDataSource } from '../support/data-source-hook.js';
import { randomKey } from '../support/key-ring.js';
import { p, randomDid, sessionValue, stateValue } from '../support/raw-sql.js';
import { REPLICA_DIALECTS, replicatedDataSource } from '../support/replicated-data-source.js';

const HOUR = 3_600_000;
const KEY_1 = randomKey();
const ring = new KeyRing({ activeKeyId: 'replica-1', keys: { 'replica-1': KEY_1 } });
installKeyRing(ring);

function appSession(did: string, now: number, overrides: { lastSeenAt?: number } = {}) {
  return {
    id: randomBytes(32).toString('hex'),
    did,
    createdAt: new Date(now - HOUR),
    expiresAt: new Date(now + 24 * HOUR),
    lastSeenAt: new Date(overrides.lastSeenAt ?? now - 60_000),
    revokedAt: null,
    userAgent: 'replica-test',
  };
}

describe.each(REPLICA_DIALECTS)('reads with a lagging replica on %s', (dialect) => {
  const ds = useDataSource(() => replicatedDataSource(dialect, 'replica'));

  it('is a real replica setup: TypeORM sends a plain find to the (empty) replica', async () => {
    const store = new TypeOrmAppSessionStore(ds());
    const record = appSession(randomDid(), Date.now());
    await store.create(record);
    // The write reached the primary, and a find through the DataSource's default read mode
    // misses it: without that, the tests below would prove nothing.
    expect(await ds().getRepository(AtProtoAppSessionEntity).findOneBy({ id: record.id })).toBe(
      null,
    );
    const [row] = (await ds().query(
      `SELECT COUNT(*) AS n FROM atproto_app_session WHERE id = ${p(dialect, 1)}`,
      [record.id],
    )) as Array<{ n: unknown }>;
    expect(Number(row?.n)).toBe(1);
  });

  it('state store: get sees the state set a moment before', async () => {
    const store = new TypeOrmStateStore(ds(), { ttlMs: HOUR });
    const key = randomBytes(16).toString('base64url');
    const value = stateValue();
    await store.set(key, value);
    expect(await store.get(key)).toEqual(value);
  });

  it('session store: get sees the session (the rotated refresh token) set a moment before', async () => {
    const store = new TypeOrmSessionStore(ds(), { ttlMs: HOUR });
    const did = randomDid();
    await store.set(did, sessionValue(did));
    const rotated = sessionValue(did);
    await store.set(did, rotated);
    expect(await store.get(did)).toEqual(rotated);
  });

  it('session store: getVersioned sees the version written a moment before', async () => {
    const store = new TypeOrmSessionStore(ds(), { ttlMs: HOUR });
    const did = randomDid();
    await store.set(did, sessionValue(did));
    const first = await store.getVersioned(did);
    const rotated = sessionValue(did);
    await store.set(did, rotated);
    const read = await store.getVersioned(did);
    expect(read?.value).toEqual(rotated);
    expect(read?.version).toBe(first!.version + 1);
    expect(await store.setIfVersion(did, sessionValue(did), read!.version)).toBe(read!.version + 1);
  });

  it('app session store: get, listForDid and a revocation are seen at once', async () => {
    const store = new TypeOrmAppSessionStore(ds());
    const did = randomDid();
    const now = Date.now();
    const a = appSession(did, now);
    const b = appSession(did, now);
    await store.create(a);
    await store.create(b);
    expect((await store.get(a.id))?.did).toBe(did);
    expect((await store.listForDid(did)).map((r) => r.id).sort()).toEqual([a.id, b.id].sort());
    const at = new Date(now);
    expect(await store.revoke(a.id, at)).toBe(true);
    expect((await store.get(a.id))?.revokedAt).toEqual(at);
    expect((await store.listForDid(did)).map((r) => r.id)).toEqual([b.id]);
  });

  it('cleanup selects see rows written a moment before, and never take an active user for an inactive one', async () => {
    const now = Date.now();
    const states = new TypeOrmStateStore(ds(), { ttlMs: HOUR, now: () => now - 2 * HOUR });
    const sessions = new TypeOrmSessionStore(ds(), { ttlMs: HOUR, now: () => now - 2 * HOUR });
    const apps = new TypeOrmAppSessionStore(ds());
    const target = new TypeOrmCleanupTarget(ds());

    const key = randomBytes(16).toString('base64url');
    await states.set(key, stateValue());
    const expiredDid = randomDid();
    await sessions.set(expiredDid, sessionValue(expiredDid));
    expect(await target.deleteExpiredStates(now, 100)).toBe(1);
    expect(await target.deleteExpiredOAuthSessions(now, 100)).toBe(1);

    const active = randomDid();
    const idle = randomDid();
    await apps.create(appSession(active, now));
    await apps.create(appSession(idle, now, { lastSeenAt: now - 10 * 24 * HOUR }));
    const cutoffs = { now, idleBefore: now - 7 * 24 * HOUR, revokedBefore: now - HOUR };
    expect(await target.deleteEndedAppSessions(cutoffs, 100)).toEqual({
      deleted: 1,
      dids: [idle],
    });
    expect(await target.didsWithoutActiveAppSession([active, idle], cutoffs)).toEqual([idle]);
  });

  it('cleanup: oauthSessionsWithoutActiveAppSession reads the primary', async () => {
    const now = Date.now();
    const sessions = new TypeOrmSessionStore(ds(), { ttlMs: HOUR });
    const apps = new TypeOrmAppSessionStore(ds());
    const target = new TypeOrmCleanupTarget(ds());
    const withApp = randomDid();
    const without = randomDid();
    await sessions.set(withApp, sessionValue(withApp));
    await sessions.set(without, sessionValue(without));
    await apps.create(appSession(withApp, now));
    const page = await target.oauthSessionsWithoutActiveAppSession(
      { now, idleBefore: now - 7 * 24 * HOUR },
      undefined,
      10_000,
    );
    expect(page).toContain(without);
    expect(page).not.toContain(withApp);
  });

  it('reencrypt reads the rows to rewrite from the primary', async () => {
    const store = new TypeOrmSessionStore(ds(), { ttlMs: HOUR });
    const did = randomDid();
    await store.set(did, sessionValue(did));
    const next = new KeyRing({
      activeKeyId: 'replica-2',
      keys: { 'replica-1': KEY_1, 'replica-2': randomKey() },
    });
    const result = await reencrypt(ds(), { keyRing: next });
    expect(result.tables.atproto_oauth_session.rewritten).toBeGreaterThanOrEqual(1);
    expect(result.failures).toEqual([]);
  });
});
