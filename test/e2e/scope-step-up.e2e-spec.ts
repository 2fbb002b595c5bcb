/**
 * Scope-aware routes with step-up, against a real local PDS: a session granted a narrower
 * scope is refused on an `@AtProtoScope()` route with the missing scope named and a
 * `loginUrl`; following it (sign-in and consent at the PDS) grants the scope and the route
 * then works, for every device of the user, while another device keeps working throughout.
 * A step-up signed in with another account replaces nothing; a narrowed consent still lacks
 * the scope; an API key gets the RFC 6750 header; a scope the app does not declare cannot be
 * asked for.
 */
import { Controller, Get, Post } from '@nestjs/common';
import { Agent } from '@atproto/api';
import type { OAuthSession } from '@atproto/oauth-client-node';
import { request } from 'undici';
import {
  AppSessionService,
  AT_PROTO_SESSION_STORE,
  AtProtoApiKeyService,
  AtProtoAuthService,
  AtProtoCredentials,
  AtProtoDid,
  type AtProtoEvent,
  AtProtoEvents,
  AtProtoScope,
  AtProtoSession,
  type AtProtoSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase, type Dialect } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { signInAndConsent, startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { APP_ORIGIN, startTestApp, type TestApp } from './support/test-app.js';

const POST = 'repo:app.bsky.feed.post?action=create';

@Controller('scoped')
class ScopedController {
  /** Writes a post on the user's PDS: only works if the PDS honours the granted scope. */
  @AtProtoScope(POST)
  @Post('post')
  async post(@AtProtoSession() session: OAuthSession) {
    const { data } = await new Agent(session).com.atproto.repo.createRecord({
      repo: session.did,
      collection: 'app.bsky.feed.post',
      record: {
        $type: 'app.bsky.feed.post',
        text: 'stepped up',
        createdAt: new Date().toISOString(),
      },
    });
    return { uri: data.uri };
  }

  @AtProtoScope(POST)
  @AtProtoCredentials({ allow: ['cookie', 'bearer', 'api-key'] })
  @Get('check')
  check(@AtProtoDid() did: string) {
    return { did };
  }
}

const SETUPS: Array<[string, Dialect, boolean]> = [
  ['sqlite', 'sqlite', false],
  ['postgres with redis', 'postgres', true],
];

let pds: TestPds;
beforeAll(async () => {
  pds = await startTestPds();
});
afterAll(async () => {
  await pds?.stop();
});

describe.each(SETUPS)('scope step-up on %s', (_label, dialect, withRedis) => {
  let t: TestApp;
  let drop: () => Promise<void>;
  let alice: TestAccount;
  let bob: TestAccount;

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'e2e_scopes');
    drop = db.drop;
    t = await startTestApp(
      pds,
      db.options,
      {
        scope: 'atproto',
        optionalScopes: [POST],
        ...(withRedis
          ? {
              redis: 'redis://127.0.0.1:6379',
              redisKeyPrefix: `e2e-scopes-${process.pid}-${Date.now()}:`,
            }
          : {}),
      },
      [ScopedController],
    );
    const suffix = `${dialect}${withRedis ? '-r' : ''}`;
    alice = await pds.createAccount(`sa-${suffix}.test`);
    bob = await pds.createAccount(`sb-${suffix}.test`);
  });
  afterAll(async () => {
    await t?.close();
    await drop?.();
  });

  /** Follows a loginUrl in `browser` up to the PDS, signs in as `as`, returns the callback. */
  async function stepUp(
    browser: AppBrowser,
    loginUrl: string,
    as: TestAccount,
    consentScope?: string,
  ) {
    const url = new URL(loginUrl);
    expect(url.origin).toBe(APP_ORIGIN);
    const started = await browser.get(`${url.pathname}${url.search}`, {
      'sec-fetch-site': 'same-origin',
      'sec-fetch-mode': 'navigate',
    });
    expect(started.status).toBe(302);
    const authorizeUrl = new URL(started.location!);
    const { callbackParams } = await signInAndConsent(
      authorizeUrl,
      { username: as.handle, password: as.password },
      consentScope ? { scope: consentScope } : {},
    );
    return { authorizeUrl, callback: await browser.get(`/oauth/callback?${callbackParams}`) };
  }

  it('refuses a narrower grant with the missing scope, and the step-up login grants it', async () => {
    const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    const device1 = new AppBrowser(t.url);
    const device2 = new AppBrowser(t.url);
    expect((await device1.login(alice)).status).toBe(302);
    expect((await device2.login(alice)).status).toBe(302);
    expect((await store.get(alice.did))?.tokenSet.scope).toBe('atproto');

    // The PDS itself refuses the write to a session without the scope: what the guard
    // checks is what the PDS enforces.
    const narrow = await t.app.get(AtProtoAuthService).restore(alice.did);
    await expect(
      new Agent(narrow).com.atproto.repo.createRecord({
        repo: alice.did,
        collection: 'app.bsky.feed.post',
        record: { $type: 'app.bsky.feed.post', text: 'no', createdAt: new Date().toISOString() },
      }),
    ).rejects.toThrow();

    // The route: 403 insufficient_scope, naming the scope, with a loginUrl back to the page.
    const refused = await device1.get('/scoped/check', { referer: `${APP_ORIGIN}/compose?x=1` });
    expect(refused.status).toBe(403);
    const body = refused.body as { error: string; scope: string; loginUrl: string };
    expect(body).toMatchObject({ statusCode: 403, error: 'insufficient_scope', scope: POST });
    const loginUrl = new URL(body.loginUrl);
    expect(`${loginUrl.origin}${loginUrl.pathname}`).toBe(`${APP_ORIGIN}/oauth/login`);
    expect(Object.fromEntries(loginUrl.searchParams)).toEqual({
      input: alice.did,
      scope: `atproto ${POST}`,
      returnTo: '/compose?x=1',
    });
    expect(refused.headers['www-authenticate']).toBeUndefined();
    // A returnTo on the request itself wins over the Referer; a foreign one is not used.
    const own = await device1.get(`/scoped/check?returnTo=${encodeURIComponent('/drafts')}`, {
      referer: `${APP_ORIGIN}/compose`,
    });
    expect(new URL((own.body as { loginUrl: string }).loginUrl).searchParams.get('returnTo')).toBe(
      '/drafts',
    );
    const foreign = await device1.get('/scoped/check', { referer: 'https://evil.example/x' });
    expect(
      new URL((foreign.body as { loginUrl: string }).loginUrl).searchParams.get('returnTo'),
    ).toBe('/');

    // The user unticks the scope at the consent screen: signed in again, still without it.
    const declined = await stepUp(device1, body.loginUrl, alice, 'atproto');
    expect(declined.authorizeUrl.origin).toBe(new URL(pds.url).origin);
    expect(declined.callback.status).toBe(302);
    expect((await store.get(alice.did))?.tokenSet.scope).toBe('atproto');
    const still = await device1.get('/scoped/check');
    expect(still.status).toBe(403);
    expect((still.body as { scope: string }).scope).toBe(POST);

    // The step-up, granted. Device 2 keeps working while it is under way.
    const cookieBefore = device1.jar.header();
    const granted = await stepUp(device1, body.loginUrl, alice);
    expect((await device2.get('/me')).body).toEqual({ did: alice.did });
    expect(granted.callback.status).toBe(302);
    expect(granted.callback.location).toBe('/compose?x=1');
    expect((await store.get(alice.did))?.tokenSet.scope?.split(' ').sort()).toEqual(
      ['atproto', POST].sort(),
    );

    // The route works now, and the PDS accepts the write.
    expect((await device1.get('/scoped/check')).body).toEqual({ did: alice.did });
    const posted = await device1.post('/scoped/post');
    expect(posted.status).toBe(201);
    expect((posted.body as { uri: string }).uri).toMatch(
      new RegExp(`^at://${alice.did}/app.bsky.feed.post/`),
    );
    // The wider session is the user's, for every device: device 2 got it too.
    expect((await device2.get('/me')).body).toEqual({ did: alice.did });
    expect((await device2.get('/scoped/check')).body).toEqual({ did: alice.did });

    // This browser's app session was renewed, not added: the old cookie is dead, and the
    // user has two devices, as before.
    expect(device1.jar.header()).not.toBe(cookieBefore);
    const old = await request(`${t.url}/me`, { headers: { cookie: cookieBefore } });
    expect(old.statusCode).toBe(401);
    await old.body.dump();
    expect(await t.app.get(AppSessionService).list(alice.did)).toHaveLength(2);
  });

  it('a step-up signed in with another account is refused and replaces nothing', async () => {
    const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    const aliceDevice = new AppBrowser(t.url);
    const bobDevice = new AppBrowser(t.url);
    // A fresh Alice session without the scope (a new login replaces the wider one).
    expect((await aliceDevice.login(alice)).status).toBe(302);
    expect((await bobDevice.login(bob)).status).toBe(302);
    const aliceBefore = await store.get(alice.did);
    const bobBefore = await store.get(bob.did);
    expect(aliceBefore?.tokenSet.scope).toBe('atproto');

    const refused = await aliceDevice.get('/scoped/check');
    const { loginUrl } = refused.body as { loginUrl: string };
    const revokes = pds.revokeRequests.length;
    const mismatch = await stepUp(aliceDevice, loginUrl, bob);
    expect(mismatch.callback.status).toBe(400);
    expect(JSON.stringify(mismatch.callback.body)).toMatch(/another account/);

    // Nothing replaced: Alice's and Bob's sessions are as they were, both still work, and
    // the tokens the stray login obtained were revoked at the PDS.
    expect(await store.get(alice.did)).toEqual(aliceBefore);
    expect(await store.get(bob.did)).toEqual(bobBefore);
    expect((await aliceDevice.get('/me')).body).toEqual({ did: alice.did });
    expect((await bobDevice.get('/me/session')).body).toMatchObject({ status: 200 });
    // (The OAuth client sends the revocation twice when a store refuses a session: once in
    // its session getter, once in callback(); a DPoP nonce retry may add a 400.)
    const revoked = pds.revokeRequests.slice(revokes);
    expect(revoked.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(1);
    expect(revoked.every((r) => r.status === 200 || r.error === 'use_dpop_nonce')).toBe(true);
    expect((await aliceDevice.get('/scoped/check')).status).toBe(403);
  });

  it('another device asking a scoped route while the session is being replaced waits for the new one', async () => {
    const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
    const device1 = new AppBrowser(t.url);
    const device2 = new AppBrowser(t.url);
    expect((await device1.login(alice)).status).toBe(302);
    expect((await device2.login(alice)).status).toBe(302);
    const { loginUrl } = (await device1.get('/scoped/check')).body as { loginUrl: string };

    // Right before the new session is written (the previous one already deleted by the OAuth
    // client), device 2 calls the scoped route.
    const set = store.set.bind(store);
    let during: Promise<{ status: number; body: unknown }> | undefined;
    store.set = async (did, value) => {
      if (did === alice.did && !during) {
        during = device2.get('/scoped/check');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      return set(did, value);
    };
    try {
      expect((await stepUp(device1, loginUrl, alice)).callback.status).toBe(302);
    } finally {
      store.set = set;
    }
    // Not "your session has ended": it waited for the wider session and got in.
    expect(await during).toMatchObject({ status: 200, body: { did: alice.did } });
  });

  it("work started by an event listener during a step-up is not bound to the step-up's account", async () => {
    const device = new AppBrowser(t.url);
    const bobDevice = new AppBrowser(t.url);
    expect((await device.login(alice)).status).toBe(302);
    expect((await bobDevice.login(bob)).status).toBe(302);
    const { loginUrl } = (await device.get('/scoped/check')).body as { loginUrl: string };
    const auth = t.app.get(AtProtoAuthService);
    let later: Promise<unknown> | undefined;
    const subscription = t.app.get(AtProtoEvents).events$.subscribe((event) => {
      if (event.type === 'oauth-session-created' && event.did === alice.did) {
        later = new Promise((resolve) => setTimeout(resolve, 50)).then(() =>
          auth.restore(bob.did).then((s) => s.did),
        );
      }
    });
    try {
      expect((await stepUp(device, loginUrl, alice)).callback.status).toBe(302);
    } finally {
      subscription.unsubscribe();
    }
    await expect(later).resolves.toBe(bob.did);
  });

  it('the login event of a step-up names the app session it renewed', async () => {
    const device = new AppBrowser(t.url);
    expect((await device.login(alice)).status).toBe(302);
    const { loginUrl } = (await device.get('/scoped/check')).body as { loginUrl: string };
    const events: AtProtoEvent[] = [];
    const subscription = t.app.get(AtProtoEvents).events$.subscribe((e) => events.push(e));
    const ids = new Set((await t.app.get(AppSessionService).list(alice.did)).map((s) => s.id));
    try {
      expect((await stepUp(device, loginUrl, alice)).callback.status).toBe(302);
    } finally {
      subscription.unsubscribe();
    }
    const login = events.find((e) => e.type === 'login');
    expect(login).toMatchObject({ type: 'login', did: alice.did });
    expect(login && 'renewedAppSessionId' in login && ids.has(login.renewedAppSessionId!)).toBe(
      true,
    );
  });

  it('an API key acting for the user gets the RFC 6750 header, and works after the step-up', async () => {
    const device = new AppBrowser(t.url);
    expect((await device.login(alice)).status).toBe(302);
    const { key } = await t.app.get(AtProtoApiKeyService).create(alice.did, { name: 'scoped' });
    const call = async () => {
      const res = await request(`${t.url}/scoped/check`, {
        headers: { authorization: `Bearer ${key}` },
      });
      return {
        status: res.statusCode,
        headers: res.headers,
        body: (await res.body.json()) as unknown,
      };
    };
    const refused = await call();
    expect(refused.status).toBe(403);
    expect(refused.headers['www-authenticate']).toBe(
      `Bearer error="insufficient_scope", scope="${POST}"`,
    );
    const { loginUrl } = refused.body as { loginUrl: string };
    expect(new URL(loginUrl).searchParams.get('input')).toBe(alice.did);

    // The owner grants it in a browser (here: the device already signed in).
    expect((await stepUp(device, loginUrl, alice)).callback.status).toBe(302);
    expect(await call()).toMatchObject({ status: 200, body: { did: alice.did } });
  });

  it('a login cannot ask for a scope the app does not declare', async () => {
    const browser = new AppBrowser(t.url);
    const res = await browser.get(
      `/oauth/login?input=${alice.handle}&scope=${encodeURIComponent('repo:app.bsky.feed.like')}`,
    );
    expect(res.status).toBe(400);
    expect((res.body as { message: string }).message).toMatch(
      /"repo:app.bsky.feed.like" is not one this app asks for/,
    );
    expect(browser.jar.header()).toBe('');
  });
});
