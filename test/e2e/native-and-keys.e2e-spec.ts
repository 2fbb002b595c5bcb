/**
 * Beyond the browser, against the real local PDS: a CLI signs in through the system browser
 * (scripted sign-in), gets a one-time code on its loopback redirect, exchanges it for a token
 * pair, acts on the PDS with the access token, rotates its refresh token, and loses its
 * device when a rotated token is replayed; a bot acts with an API key, which keeps its
 * owner's OAuth session alive through logout and cleanup, and stops working when revoked.
 */
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'undici';
import {
  AppSessionService,
  type AtProtoEvent,
  AtProtoEvents,
  AtProtoApiKeyService,
  AtProtoCleanupService,
  AT_PROTO_SESSION_STORE,
  type AtProtoSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { signInAndConsent, startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let olga: TestAccount;
let piet: TestAccount;

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_native_keys');
  drop = db.drop;
  t = await startTestApp(pds, db.options, {
    native: {
      redirectUris: ['http://127.0.0.1/cli', 'com.example.app:/oauth/callback'],
      tokenSecrets: { activeKid: 't1', keys: { t1: randomBytes(32).toString('base64') } },
    },
  });
  olga = await pds.createAccount('olga.test');
  piet = await pds.createAccount('piet.test');
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
});

interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Record<string, unknown>;
}
async function call(
  method: 'GET' | 'POST',
  path: string,
  options: { bearer?: string; form?: Record<string, string>; cookie?: string } = {},
): Promise<Answer> {
  const res = await request(`${t.url}${path}`, {
    method,
    headers: {
      ...(options.bearer ? { authorization: `Bearer ${options.bearer}` } : {}),
      ...(options.cookie ? { cookie: options.cookie } : {}),
      ...(options.form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    },
    body: options.form ? new URLSearchParams(options.form).toString() : undefined,
  });
  const text = await res.body.text();
  return {
    status: res.statusCode,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
    headers: res.headers,
  };
}

/** The CLI's side of a login: PKCE, the system browser (scripted), its loopback redirect. */
async function nativeLogin(
  account: TestAccount,
): Promise<{ code: string; redirectUri: string; verifier: string }> {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const redirectUri = 'http://127.0.0.1:48123/cli';
  const browser = new AppBrowser(t.url);
  const q = new URLSearchParams({
    input: account.handle,
    redirect_uri: redirectUri,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 'cli-state-1',
  });
  const start = await browser.get(`/oauth/login?${q}`);
  expect(start.status).toBe(302);
  const { callbackParams } = await signInAndConsent(start.location!, {
    username: account.handle,
    password: account.password,
  });
  const back = await browser.get(`/oauth/callback?${callbackParams}`);
  expect(back.status).toBe(302);
  const location = new URL(back.location!);
  expect(`${location.origin}${location.pathname}`).toBe(redirectUri);
  expect(location.searchParams.get('state')).toBe('cli-state-1');
  expect(browser.jar.header()).not.toContain('atproto_session='); // no browser session
  return { code: location.searchParams.get('code')!, redirectUri, verifier };
}

describe('a CLI with a token pair', () => {
  it('signs in, acts on the PDS, rotates, and loses its device on replay', async () => {
    const events: AtProtoEvent[] = [];
    const subscription = t.app.get(AtProtoEvents).events$.subscribe((e) => events.push(e));
    const { code, redirectUri, verifier } = await nativeLogin(olga);
    const pair = await call('POST', '/oauth/token', {
      form: {
        grant_type: 'authorization_code',
        code,
        code_verifier: verifier,
        redirect_uri: redirectUri,
      },
    });
    expect(pair.status).toBe(200);
    expect(pair.headers['cache-control']).toMatch(/no-store/);
    expect(pair.body).toMatchObject({ token_type: 'Bearer', did: olga.did });
    const access = pair.body.access_token as string;
    const refresh1 = pair.body.refresh_token as string;

    // The code works once.
    const again = await call('POST', '/oauth/token', {
      form: {
        grant_type: 'authorization_code',
        code,
        code_verifier: verifier,
        redirect_uri: redirectUri,
      },
    });
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');

    // The access token acts as the user, on the PDS too; it is a device of theirs.
    expect((await call('GET', '/me', { bearer: access })).body).toEqual({ did: olga.did });
    const pdsCall = await call('GET', '/me/pds', { bearer: access });
    expect(pdsCall.body).toEqual({ status: 200, did: olga.did, credential: 'bearer' });
    const devices = await t.app.get(AppSessionService).list(olga.did);
    expect(devices).toHaveLength(1);

    // Rotation, then a replay of the first refresh token once its successor was used.
    const second = await call('POST', '/oauth/token', {
      form: { grant_type: 'refresh_token', refresh_token: refresh1 },
    });
    expect(second.status).toBe(200);
    const third = await call('POST', '/oauth/token', {
      form: { grant_type: 'refresh_token', refresh_token: second.body.refresh_token as string },
    });
    expect(third.status).toBe(200);
    const replay = await call('POST', '/oauth/token', {
      form: { grant_type: 'refresh_token', refresh_token: refresh1 },
    });
    expect(replay.status).toBe(400);
    expect(replay.body.error).toBe('invalid_grant');
    // The whole family (the device) is gone: the newest access token is refused too.
    const refused = await call('GET', '/me', { bearer: third.body.access_token as string });
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toMatch(/invalid_token/);
    expect(await t.app.get(AppSessionService).list(olga.did)).toHaveLength(0);
    subscription.unsubscribe();
    const sid = devices[0]!.id;
    expect(events).toContainEqual({ type: 'login', did: olga.did, appSessionId: sid });
    expect(events).toContainEqual({
      type: 'native-refresh-reuse',
      did: olga.did,
      appSessionId: sid,
    });
  });

  it('logs out with its access token; garbage and API-key-only routes are refused', async () => {
    const { code, redirectUri, verifier } = await nativeLogin(olga);
    const pair = await call('POST', '/oauth/token', {
      form: {
        grant_type: 'authorization_code',
        code,
        code_verifier: verifier,
        redirect_uri: redirectUri,
      },
    });
    const access = pair.body.access_token as string;
    expect((await call('GET', '/me', { bearer: 'not.a.jwt' })).status).toBe(401);
    expect((await call('GET', '/me', { bearer: `${access}x` })).status).toBe(401);
    expect((await call('POST', '/oauth/logout', { bearer: access })).status).toBe(204);
    expect((await call('GET', '/me', { bearer: access })).status).toBe(401);
    // A logout with a token that does not open a session says so, instead of a silent 204.
    const stale = await call('POST', '/oauth/logout', { bearer: access });
    expect(stale.status).toBe(401);
    expect(stale.headers['www-authenticate']).toMatch(/invalid_token/);
  });

  it("another Authorization scheme (a proxy's Basic auth) leaves the cookie in charge", async () => {
    const browser = new AppBrowser(t.url);
    expect((await browser.login(olga)).status).toBe(302);
    const res = await request(`${t.url}/me`, {
      headers: { cookie: browser.jar.header(), authorization: 'Basic c3RhZ2luZzpzZWNyZXQ=' },
    });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
  });
});

it('a custom-scheme redirect first shows a page naming the app, with the code link', async () => {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const browser = new AppBrowser(t.url);
  const q = new URLSearchParams({
    input: olga.handle,
    redirect_uri: 'com.example.app:/oauth/callback',
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  const start = await browser.get(`/oauth/login?${q}`);
  const { callbackParams } = await signInAndConsent(start.location!, {
    username: olga.handle,
    password: olga.password,
  });
  const page = await browser.get(`/oauth/callback?${callbackParams}`);
  expect(page.status).toBe(200);
  expect(page.headers['content-type']).toMatch(/text\/html/);
  expect(String(page.body)).toContain('e2e'); // the client name
  expect(String(page.body)).toMatch(/href="com\.example\.app:\/oauth\/callback\?code=/);
});

describe('a bot with an API key', () => {
  it('acts as its owner, survives logout and cleanup, and stops when revoked', async () => {
    const browser = new AppBrowser(t.url);
    expect((await browser.login(piet)).status).toBe(302);
    const keys = t.app.get(AtProtoApiKeyService);
    const { key, info } = await keys.create(piet.did, { name: 'feed bot' });
    expect(key.startsWith('atp_')).toBe(true);

    const acted = await call('GET', '/me/pds', { bearer: key });
    expect(acted.body).toEqual({ status: 200, did: piet.did, credential: 'api-key' });
    // Routes that do not accept keys say so.
    const closed = await call('GET', '/me', { bearer: key });
    expect(closed.status).toBe(403);
    expect(JSON.stringify(closed.body)).toMatch(/API keys are not accepted here/);
    // A typo is refused by the checksum.
    const typo = `${key.slice(0, -1)}${key.endsWith('A') ? 'B' : 'A'}`;
    expect((await call('GET', '/me/pds', { bearer: typo })).status).toBe(401);
    // The header decides: another user's cookie on the request is ignored.
    const mixed = await call('GET', '/me/pds', { bearer: key, cookie: browser.jar.header() });
    expect(mixed.body).toMatchObject({ did: piet.did, credential: 'api-key' });

    // The owner logs out of the only browser, and cleanup runs: the key keeps the session.
    const revokes = pds.revokeRequests.length;
    expect((await browser.post('/oauth/logout')).status).toBe(204);
    await t.app.get(AtProtoCleanupService).runOnce();
    expect(pds.revokeRequests.length).toBe(revokes);
    expect(
      await t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE).get(piet.did),
    ).toBeDefined();
    expect((await call('GET', '/me/pds', { bearer: key })).body).toMatchObject({ status: 200 });

    // Revoked: refused (this instance applies it at once).
    expect(await keys.revoke(info.id, { did: piet.did })).toBe(true);
    expect((await call('GET', '/me/pds', { bearer: key })).status).toBe(401);
  });
});
