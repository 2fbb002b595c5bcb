/**
 * Bad input gets a clean 4xx and changes nothing: forged, expired or replayed state, a
 * mismatching issuer, an error answer from the authorization server, open-redirect
 * returnTo, tampered/unknown/revoked cookies, malformed or oversized handles, oversized
 * bodies, cross-site POSTs. Never a 500, never a secret in a response or a log line.
 */
import type { DataSource } from 'typeorm';
import {
  AppSessionService,
  AT_PROTO_SESSION_STORE,
  type AtProtoSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase, type Dialect } from '../support/databases.js';
import { AppBrowser, type AppResponse } from './support/app-client.js';
import { signInAndConsent, startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { APP_ORIGIN, startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
beforeAll(async () => {
  pds = await startTestPds();
});
afterAll(async () => {
  await pds?.stop();
});

const TABLES = ['atproto_oauth_state', 'atproto_oauth_session', 'atproto_app_session'];

/** Every row of every table, as JSON: equal snapshots mean "no row changed". */
async function snapshot(ds: DataSource): Promise<string> {
  const out: unknown[] = [];
  for (const t of TABLES) out.push(await ds.query(`SELECT * FROM ${t} ORDER BY 1`));
  return JSON.stringify(out);
}

describe.each<Dialect>(['sqlite', 'postgres'])('bad input on %s', (dialect) => {
  let t: TestApp;
  let drop: () => Promise<void>;
  let carol: TestAccount;
  let signedIn: AppBrowser;

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'e2e_bad_input');
    drop = db.drop;
    t = await startTestApp(pds, db.options);
    carol = await pds.createAccount(`carol-${dialect}.test`);
    signedIn = new AppBrowser(t.url);
    expect((await signedIn.login(carol)).status).toBe(302);
  });
  afterAll(async () => {
    await t?.close();
    await drop?.();
  });

  /** Runs `act`, expects `status`, and checks no row of any table changed. */
  async function unchanged(status: number, act: () => Promise<AppResponse>): Promise<AppResponse> {
    const before = await snapshot(t.dataSource);
    const res = await act();
    expect(res.status).toBe(status);
    expect(typeof res.body === 'object' && res.body !== null).toBe(true);
    expect(await snapshot(t.dataSource)).toBe(before);
    return res;
  }

  /** A login started in `browser`, signed in and consented at the PDS: the callback params. */
  async function pendingCallback(browser: AppBrowser): Promise<URLSearchParams> {
    const url = await browser.startLogin(carol.handle);
    return (await signInAndConsent(url, { username: carol.handle, password: carol.password }))
      .callbackParams;
  }

  it('refuses a forged state', async () => {
    const b = new AppBrowser(t.url);
    await b.startLogin(carol.handle);
    const res = await unchanged(400, () =>
      b.get(
        `/oauth/callback?state=forged-${'x'.repeat(20)}&code=abc&iss=${encodeURIComponent(pds.url)}`,
      ),
    );
    expect(JSON.stringify(res.body)).toMatch(/unknown, expired or already used/);
    await unchanged(400, () => b.get('/oauth/callback?code=abc'));
    await unchanged(400, () => b.get(`/oauth/callback?state=${'%00'.repeat(3)}`));
  });

  it('refuses an expired state', async () => {
    const b = new AppBrowser(t.url);
    const params = await pendingCallback(b);
    await t.dataSource.query(
      dialect === 'postgres'
        ? `UPDATE atproto_oauth_state SET expires_at = 1 WHERE key = $1`
        : `UPDATE atproto_oauth_state SET expires_at = 1 WHERE key = ?`,
      [params.get('state')],
    );
    await unchanged(400, () => b.get(`/oauth/callback?${params}`));
  });

  it('refuses an issuer that does not match, and an error answer from the server', async () => {
    const b = new AppBrowser(t.url);
    const params = await pendingCallback(b);
    const wrongIss = new URLSearchParams(params);
    wrongIss.set('iss', 'https://evil.example');
    const res = await unchanged(400, () => b.get(`/oauth/callback?${wrongIss}`));
    expect(JSON.stringify(res.body)).toMatch(/another issuer/);
    const denied = new URLSearchParams({
      state: params.get('state')!,
      iss: pds.url,
      error: 'access_denied',
    });
    const d = await unchanged(400, () => b.get(`/oauth/callback?${denied}`));
    expect(JSON.stringify(d.body)).toMatch(/did not grant access \(access_denied\)/);
    // The untouched state still completes the real login afterwards.
    expect((await b.get(`/oauth/callback?${params}`)).status).toBe(302);
  });

  it.each([
    'https://evil.example/',
    '//evil.example/x',
    '/\\evil.example',
    '/\t/evil.example',
    'javascript:alert(1)',
    '/.//evil.example',
    '/%2e%2e//evil.example',
    '/a/../..//evil.example',
    'me',
  ])('refuses returnTo %j', async (returnTo) => {
    const b = new AppBrowser(t.url);
    const q = new URLSearchParams({ input: carol.handle, returnTo });
    await unchanged(400, () => b.get(`/oauth/login?${q}`));
    expect(b.jar.header()).toBe('');
  });

  it.each([
    ['empty', ''],
    ['spaces', 'not a handle'],
    ['no dot', 'localhost'],
    ['label too long', `${'a'.repeat(64)}.test`],
    ['over 253 chars', `${'abcdefghi.'.repeat(26)}test`],
    ['unicode', 'ålice.test'],
    ['bad did', 'did:plc:UPPERCASE'],
    ['http url', 'http://evil.example'],
    ['oversized', 'a'.repeat(5000)],
  ])('refuses a malformed login input (%s)', async (_, input) => {
    const b = new AppBrowser(t.url);
    await unchanged(400, () => b.get(`/oauth/login?input=${encodeURIComponent(input)}`));
  });

  it('exchanges the code once when the callback is loaded twice at the same time', async () => {
    const b = new AppBrowser(t.url);
    const params = await pendingCallback(b);
    const codeExchanges = () =>
      pds.tokenRequests.filter((r) => r.grantType === 'authorization_code' && r.status === 200)
        .length;
    const before = codeExchanges();
    const [first, second] = await Promise.all([
      b.get(`/oauth/callback?${params}`),
      b.get(`/oauth/callback?${params}`),
    ]);
    expect([first.status, second.status].sort()).toEqual([302, 400]);
    expect(codeExchanges()).toBe(before + 1);
    expect((await b.get('/me')).status).toBe(200);
  });

  it('refuses a login started by another site (login CSRF through GET)', async () => {
    const b = new AppBrowser(t.url);
    const q = new URLSearchParams({ input: carol.handle });
    for (const site of ['cross-site', 'same-site']) {
      await unchanged(403, () => b.get(`/oauth/login?${q}`, { 'sec-fetch-site': site }));
    }
    expect(b.jar.header()).toBe('');
    // Typed, bookmarked or from the app's own pages: fine.
    const own = await b.get(`/oauth/login?${q}`, { 'sec-fetch-site': 'same-origin' });
    expect(own.status).toBe(302);
  });

  it('refuses an oversized body', async () => {
    const b = new AppBrowser(t.url);
    const body = `input=${'a'.repeat(300_000)}`;
    await unchanged(413, () =>
      b.post('/oauth/login', body, { 'content-type': 'application/x-www-form-urlencoded' }),
    );
  });

  it('treats tampered, truncated, unknown and revoked session cookies as signed out', async () => {
    const name = '__Host-atproto_session';
    const token = signedIn.jar.get(name)!;
    expect((await signedIn.get('/me')).status).toBe(200);
    const variants = [
      token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A'),
      token.slice(0, 20),
      'x'.repeat(43),
      `${token}x`,
      '%%%',
    ];
    for (const v of variants) {
      await unchanged(401, () => new AppBrowser(t.url).get('/me', { cookie: `${name}=${v}` }));
    }
    const other = new AppBrowser(t.url);
    expect((await other.login(carol)).status).toBe(302);
    const otherToken = other.jar.get(name)!;
    await t.app.get(AppSessionService).revoke(AppSessionService.idOf(otherToken));
    await unchanged(401, () => other.get('/me'));
  });

  it('refuses cross-site POSTs authenticated by cookie', async () => {
    await unchanged(403, () =>
      signedIn.post('/oauth/logout', undefined, {
        origin: 'https://evil.example',
        'sec-fetch-site': 'cross-site',
      }),
    );
    await unchanged(403, () =>
      signedIn.send('POST', '/oauth/logout', undefined, { origin: 'https://evil.example' }),
    );
    await unchanged(403, () =>
      signedIn.post('/oauth/login', 'input=carol.test', {
        'content-type': 'application/x-www-form-urlencoded',
        'sec-fetch-site': 'cross-site',
        origin: 'https://evil.example',
      }),
    );
    expect((await signedIn.get('/me')).status).toBe(200);
    expect(APP_ORIGIN).toBe('https://app.e2e.internal');
  });

  it('never puts a token, key or verifier in a response or a log line', async () => {
    const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    const session = await store.get(carol.did);
    expect(session).toBeDefined();
    const secrets = [
      session!.tokenSet.access_token,
      session!.tokenSet.refresh_token!,
      (session!.dpopJwk as { d?: string }).d!,
      signedIn.jar.get('__Host-atproto_session')!,
    ];
    const res = await signedIn.get('/me/session');
    expect(res.status).toBe(200);
    const logs = t.logs.join('\n');
    for (const s of secrets) {
      expect(JSON.stringify(res.body)).not.toContain(s);
      expect(logs).not.toContain(s);
    }
  });
});
