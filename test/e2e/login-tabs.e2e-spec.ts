/**
 * Logins started in several tabs of one browser: each has its own login cookie (bound to its
 * own state), so every tab's callback succeeds, in any order, and clears only its own cookie.
 * At most four logins are kept under way per browser: a fifth drops the oldest.
 */
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { signInAndConsent, startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let hana: TestAccount;

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_login_tabs');
  drop = db.drop;
  t = await startTestApp(pds, db.options);
  hana = await pds.createAccount('hana.test');
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
});

const loginCookies = (browser: AppBrowser) =>
  browser.jar
    .header()
    .split('; ')
    .filter((c) => c.startsWith('__Host-atproto_session_login'));

async function consent(authorizeUrl: URL): Promise<URLSearchParams> {
  const { callbackParams } = await signInAndConsent(authorizeUrl, {
    username: hana.handle,
    password: hana.password,
  });
  return callbackParams;
}

it('two logins in two tabs both complete, in either order', async () => {
  for (const order of [
    [0, 1],
    [1, 0],
  ]) {
    const browser = new AppBrowser(t.url);
    const tabs = [await browser.startLogin(hana.handle), await browser.startLogin(hana.handle)];
    expect(loginCookies(browser)).toHaveLength(2);
    const params = [await consent(tabs[0]!), await consent(tabs[1]!)];
    for (const [step, i] of order.entries()) {
      const res = await browser.get(`/oauth/callback?${params[i]!}`);
      expect(res.status).toBe(302);
      expect(loginCookies(browser)).toHaveLength(1 - step); // only its own cookie is cleared
    }
    expect((await browser.get('/me')).status).toBe(200);
  }
});

it('a fifth login under way drops the oldest one', async () => {
  const browser = new AppBrowser(t.url);
  const tabs: URL[] = [];
  for (let i = 0; i < 5; i++) tabs.push(await browser.startLogin(hana.handle));
  expect(loginCookies(browser)).toHaveLength(4);
  const oldest = await consent(tabs[0]!);
  expect((await browser.get(`/oauth/callback?${oldest}`)).status).toBe(400);
  const newest = await consent(tabs[4]!);
  expect((await browser.get(`/oauth/callback?${newest}`)).status).toBe(302);
});

it('a callback opened in another browser is still refused', async () => {
  const starter = new AppBrowser(t.url);
  const params = await consent(await starter.startLogin(hana.handle));
  const other = new AppBrowser(t.url);
  await other.startLogin(hana.handle); // has a login cookie of its own, for another login
  expect((await other.get(`/oauth/callback?${params}`)).status).toBe(400);
  expect((await starter.get(`/oauth/callback?${params}`)).status).toBe(302);
});
