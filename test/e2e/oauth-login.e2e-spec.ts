/**
 * The module end to end against a real local PDS: login → PDS sign-in and consent → our
 * callback → cookie → guarded route → @AtProtoSession() calls the PDS → forced refresh
 * stores new tokens encrypted → logout revokes at the PDS; the login-CSRF case; two devices.
 */
import type { DataSource } from 'typeorm';
import {
  AtProtoEvents,
  type AtProtoEvent,
  AtProtoAuthService,
  AtProtoAppSessionEntity,
  AtProtoCleanupService,
  AT_PROTO_SESSION_STORE,
  type AtProtoSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase, type Dialect } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { signInAndConsent, startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

/** Each database, plus SQLite with Redis: the Redlock lock, Redis stores and shared caches. */
const SETUPS: Array<[string, Dialect, boolean]> = [
  ['sqlite', 'sqlite', false],
  ['postgres', 'postgres', false],
  ['mariadb', 'mariadb', false],
  ['sqlite with redis (lock, stores, caches)', 'sqlite', true],
];

let pds: TestPds;
beforeAll(async () => {
  pds = await startTestPds();
});
afterAll(async () => {
  await pds?.stop();
});

async function rowCounts(ds: DataSource): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const table of ['atproto_oauth_state', 'atproto_oauth_session', 'atproto_app_session']) {
    const [row] = (await ds.query(`SELECT COUNT(*) AS n FROM ${table}`)) as Array<{ n: unknown }>;
    out[table] = Number(row?.n);
  }
  return out;
}

async function tableDump(ds: DataSource): Promise<string> {
  const parts: unknown[] = [];
  for (const table of ['atproto_oauth_state', 'atproto_oauth_session', 'atproto_app_session']) {
    parts.push(await ds.query(`SELECT * FROM ${table}`));
  }
  return JSON.stringify(parts);
}

describe.each(SETUPS)('OAuth login end to end on %s', (_label, dialect, withRedis) => {
  let t: TestApp;
  let drop: () => Promise<void>;
  let alice: TestAccount;
  let bob: TestAccount;

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'e2e_login');
    drop = db.drop;
    t = await startTestApp(
      pds,
      db.options,
      withRedis
        ? {
            redis: 'redis://127.0.0.1:6379',
            redisStore: true,
            redisKeyPrefix: `e2e-${process.pid}-${Date.now()}:`,
          }
        : {},
    );
    alice = await pds.createAccount(`alice-${dialect}${withRedis ? '-r' : ''}.test`);
    bob = await pds.createAccount(`bob-${dialect}${withRedis ? '-r' : ''}.test`);
  });
  afterAll(async () => {
    await t?.close();
    await drop?.();
  });

  it('logs in, calls the PDS as the user, refreshes encrypted, and logs out with revocation', async () => {
    const browser = new AppBrowser(t.url);
    const events: AtProtoEvent[] = [];
    const subscription = t.app.get(AtProtoEvents).events$.subscribe((e) => events.push(e));
    const types = () =>
      events
        .splice(0)
        .map((e) => (e.type === 'oauth-session-deleted' ? `${e.type}:${e.reason}` : e.type));
    expect((await browser.get('/me')).status).toBe(401);

    const callback = await browser.login(alice, '/me');
    expect(callback.status).toBe(302);
    expect(callback.location).toBe('/me');
    const setCookies = ([] as string[]).concat(callback.headers['set-cookie'] ?? []);
    const sessionCookie = setCookies.find((c) => c.startsWith('__Host-atproto_session='));
    expect(sessionCookie).toMatch(/HttpOnly/i);
    expect(sessionCookie).toMatch(/Secure/i);
    expect(sessionCookie).toMatch(/SameSite=Lax/i);
    expect(sessionCookie).toMatch(/Path=\//);

    expect((await browser.get('/me')).body).toEqual({ did: alice.did });
    expect(types()).toEqual(['oauth-session-created', 'login']);
    const viaPds = await browser.get('/me/session');
    expect(viaPds.status).toBe(200);
    expect(viaPds.body).toEqual({
      status: 200,
      body: expect.objectContaining({ did: alice.did, handle: alice.handle }),
    });

    // Forced refresh: exactly one refresh reaches the PDS, the row is rewritten encrypted.
    const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    const before = await store.get(alice.did);
    const refreshesBefore = pds.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;
    await t.app.get(AtProtoAuthService).restore(alice.did, true);
    const refreshes = pds.tokenRequests.filter((r) => r.grantType === 'refresh_token');
    expect(refreshes.length).toBe(refreshesBefore + 1);
    expect(types()).toEqual(['oauth-session-refreshed']);
    const after = await store.get(alice.did);
    expect(after?.tokenSet.refresh_token).not.toBe(before?.tokenSet.refresh_token);
    const dump = await tableDump(t.dataSource);
    for (const secret of [
      after?.tokenSet.access_token,
      after?.tokenSet.refresh_token,
      (after?.dpopJwk as { d?: string } | undefined)?.d,
    ]) {
      expect(typeof secret).toBe('string');
      expect(dump).not.toContain(secret as string);
    }
    expect((await browser.get('/me/session')).status).toBe(200);

    // Logout (the last device): the app session ends and the PDS revokes the tokens.
    const saved = await store.get(alice.did);
    const revokesBefore = pds.revokeRequests.length;
    const logout = await browser.post('/oauth/logout');
    expect(logout.status).toBe(204);
    expect((await browser.get('/me')).status).toBe(401);
    expect(pds.revokeRequests.length).toBeGreaterThan(revokesBefore);
    expect(await store.get(alice.did)).toBeUndefined();
    expect(types()).toEqual(['oauth-session-deleted:logout', 'logout']);
    subscription.unsubscribe();
    // Put the old tokens back: the PDS must reject them now.
    await store.set(alice.did, saved!);
    const session = await t.app.get(AtProtoAuthService).oauthClient.restore(alice.did, false);
    const res = await session.fetchHandler('/xrpc/com.atproto.server.getSession');
    expect(res.status).toBe(401);
    await store.del(alice.did);
  });

  it('refuses a callback replayed from another browser, changing no row, and a replayed state', async () => {
    const victim = new AppBrowser(t.url);
    const attacker = new AppBrowser(t.url);
    await attacker.startLogin(bob.handle); // the attacker has a login cookie of its own
    const authorizeUrl = await victim.startLogin(bob.handle);
    const { callbackParams } = await signInAndConsent(authorizeUrl, {
      username: bob.handle,
      password: bob.password,
    });

    const counts = await rowCounts(t.dataSource);
    const tokenRequests = pds.tokenRequests.length;
    const foreign = await attacker.get(`/oauth/callback?${callbackParams}`);
    expect(foreign.status).toBe(400);
    expect(JSON.stringify(foreign.body)).toMatch(/another browser/);
    const noCookie = await new AppBrowser(t.url).get(`/oauth/callback?${callbackParams}`);
    expect(noCookie.status).toBe(400);
    expect(await rowCounts(t.dataSource)).toEqual(counts);
    expect(pds.tokenRequests.length).toBe(tokenRequests); // the code was never exchanged

    // The browser that started the login still completes it, once.
    const ok = await victim.get(`/oauth/callback?${callbackParams}`);
    expect(ok.status).toBe(302);
    expect((await victim.get('/me')).body).toEqual({ did: bob.did });
    const replay = await victim.get(`/oauth/callback?${callbackParams}`);
    expect(replay.status).toBe(400);
    await victim.post('/oauth/logout');
  });

  it('keeps two devices signed in on one OAuth session; logging out of one leaves the other', async () => {
    const phone = new AppBrowser(t.url);
    const laptop = new AppBrowser(t.url);
    expect((await phone.login(alice)).status).toBe(302);
    const deleted: AtProtoEvent[] = [];
    const sub = t.app
      .get(AtProtoEvents)
      .events$.subscribe((e) => e.type === 'oauth-session-deleted' && deleted.push(e));
    expect((await laptop.login(alice)).status).toBe(302); // replaces (revokes) the first OAuth session
    sub.unsubscribe();
    expect(deleted).toEqual([
      {
        type: 'oauth-session-deleted',
        did: alice.did,
        reason: 'replaced',
        message: expect.any(String),
      },
    ]);
    expect((await phone.get('/me/session')).status).toBe(200); // transparently uses the new one
    expect((await laptop.get('/me/session')).status).toBe(200);

    const revokes = pds.revokeRequests.length;
    expect((await phone.post('/oauth/logout')).status).toBe(204);
    expect(pds.revokeRequests.length).toBe(revokes); // another device is still signed in
    expect((await phone.get('/me')).status).toBe(401);
    expect((await laptop.get('/me/session')).status).toBe(200);

    expect((await laptop.post('/oauth/logout')).status).toBe(204);
    expect(pds.revokeRequests.length).toBe(revokes + 1); // the last device: revoked at the PDS
    expect((await laptop.get('/me')).status).toBe(401);
  });
  it('cleanup revokes the OAuth session at the PDS when it deletes the last app session', async () => {
    const browser = new AppBrowser(t.url);
    expect((await browser.login(bob)).status).toBe(302);
    const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    expect(await store.get(bob.did)).toBeDefined();
    // The device's session ends (its absolute lifetime has passed).
    await t.dataSource
      .getRepository(AtProtoAppSessionEntity)
      .update({ did: bob.did }, { expiresAt: new Date(Date.now() - 1000) });
    const revokes = pds.revokeRequests.length;
    const result = await t.app.get(AtProtoCleanupService).runOnce();
    expect(result.appSessions).toBeGreaterThanOrEqual(1);
    expect(result.oauthSessionsRevoked).toBe(1);
    expect(pds.revokeRequests.length).toBe(revokes + 1);
    expect(await store.get(bob.did)).toBeUndefined();
    expect((await browser.get('/me')).status).toBe(401);
  });
});
