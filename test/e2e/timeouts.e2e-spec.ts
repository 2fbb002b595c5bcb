/**
 * A hung authorization server cannot hold the session lock without limit: every request of
 * the OAuth client has a time limit (httpTimeout), after which the restore fails with a
 * clear error, the lock is free again and the session is still stored.
 */
import { performance } from 'node:perf_hooks';
import {
  AtProtoAuthService,
  AtProtoUpstreamError,
  AT_PROTO_SESSION_STORE,
  type AtProtoSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let dave: TestAccount;

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_timeouts');
  drop = db.drop;
  t = await startTestApp(pds, db.options, { httpTimeout: 1000 });
  dave = await pds.createAccount('dave.test');
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
});

it('bounds a hung token request, frees the lock and keeps the session', async () => {
  const browser = new AppBrowser(t.url);
  expect((await browser.login(dave)).status).toBe(302);
  const auth = t.app.get(AtProtoAuthService);
  const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
  const before = await store.get(dave.did);

  pds.setTokenDelay(5000); // the token endpoint hangs far longer than httpTimeout
  const started = performance.now();
  await expect(auth.restore(dave.did, true)).rejects.toBeInstanceOf(AtProtoUpstreamError);
  const took = performance.now() - started;
  expect(took).toBeLessThan(4000); // the limit cut it, not the server
  pds.setTokenDelay(0);

  // The lock is free and the session kept: a restore that needs no refresh works at once.
  expect(await store.get(dave.did)).toEqual(before);
  const session = await auth.restore(dave.did);
  expect(session.did).toBe(dave.did);
  expect((await browser.get('/me')).status).toBe(200);
});
