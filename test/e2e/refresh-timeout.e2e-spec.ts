/**
 * A PDS call whose access token the PDS refuses, while the refresh that would cure it does not
 * complete in time (the authorization server is slow): the request is answered 503 (the
 * session cannot be used right now), not 500, and the user stays signed in.
 */
import { AT_PROTO_SESSION_STORE, type AtProtoSessionStore } from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { startTestPds, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_refresh_timeout');
  drop = db.drop;
  t = await startTestApp(pds, db.options, { httpTimeout: 1000 });
});
afterAll(async () => {
  pds?.setTokenDelay(0);
  await t?.close();
  await drop?.();
  await pds?.stop();
});
const store = () => t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);

it('answers 503, not 500, and keeps the user signed in', async () => {
  const acct = await pds.createAccount('timeout1.test');
  const browser = new AppBrowser(t.url);
  expect((await browser.login(acct)).status).toBe(302);
  expect((await browser.get('/me/agent')).status).toBe(200);
  const stored = (await store().get(acct.did))!;
  const at = stored.tokenSet.access_token;
  // The PDS no longer accepts the access token (which still looks fresh here): its
  // signature is altered.
  const altered = at.slice(0, -4) + (at.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  await store().set(acct.did, {
    ...stored,
    tokenSet: { ...stored.tokenSet, access_token: altered },
  });
  pds.setTokenDelay(3000); // the refresh does not complete within httpTimeout
  const res = await browser.get('/me/agent');
  pds.setTokenDelay(0);
  expect(res.status).toBe(503);
  expect(JSON.stringify(res.body)).not.toContain(altered);
  expect((await browser.get('/me')).status).toBe(200);
});
