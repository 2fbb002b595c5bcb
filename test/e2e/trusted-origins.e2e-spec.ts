/**
 * A single-page app on another origin of the same site uses the cookie flow: it starts the
 * login with a form POST, comes back to an absolute `returnTo` on its own origin, and its
 * credentialed requests (logout here) are accepted. Pages of any other origin are refused.
 */
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { signInAndConsent, startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

const SPA = 'https://spa.e2e.internal';
let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let mia: TestAccount;

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_trusted_origins');
  drop = db.drop;
  t = await startTestApp(pds, db.options, { trustedOrigins: [SPA] });
  mia = await pds.createAccount('mia.test');
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
});

const fromSpa = { origin: SPA, 'sec-fetch-site': 'same-site' };
const form = { 'content-type': 'application/x-www-form-urlencoded' };

it('logs in from the trusted app, back to its origin, and logs out from there', async () => {
  const browser = new AppBrowser(t.url);
  const started = await browser.send(
    'POST',
    '/oauth/login',
    new URLSearchParams({ input: mia.handle, returnTo: `${SPA}/after?x=1` }).toString(),
    { ...fromSpa, ...form },
  );
  expect(started.status).toBe(303);
  const { callbackParams } = await signInAndConsent(started.location!, {
    username: mia.handle,
    password: mia.password,
  });
  const back = await browser.get(`/oauth/callback?${callbackParams}`);
  expect(back.status).toBe(302);
  expect(back.location).toBe(`${SPA}/after?x=1`);
  expect((await browser.get('/me')).status).toBe(200);
  expect((await browser.send('POST', '/oauth/logout', undefined, fromSpa)).status).toBe(204);
  expect((await browser.get('/me')).status).toBe(401);
});

it('refuses pages of other origins, and returnTo on them', async () => {
  const browser = new AppBrowser(t.url);
  const evil = { origin: 'https://evil.e2e.internal', 'sec-fetch-site': 'same-site' };
  const login = await browser.send(
    'POST',
    '/oauth/login',
    new URLSearchParams({ input: mia.handle }).toString(),
    { ...evil, ...form },
  );
  expect(login.status).toBe(403);
  const elsewhere = await browser.send(
    'POST',
    '/oauth/login',
    new URLSearchParams({ input: mia.handle, returnTo: 'https://evil.e2e.internal/' }).toString(),
    { ...fromSpa, ...form },
  );
  expect(elsewhere.status).toBe(400);
  // A navigation from another site still cannot start a login (login CSRF).
  const nav = await browser.get(`/oauth/login?input=${mia.handle}`, {
    'sec-fetch-site': 'same-site',
  });
  expect(nav.status).toBe(403);
});
