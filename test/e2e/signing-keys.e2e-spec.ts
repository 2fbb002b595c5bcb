/**
 * Signing-key rotation: with several keys, new sessions are bound to the one named by
 * `activeSigningKid` (not to whichever comes first in the list), and every key stays
 * published, so sessions bound to an older key keep refreshing. Against the real PDS.
 */
import {
  AT_PROTO_SESSION_STORE,
  AtProtoAuthService,
  type AtProtoSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, testSigningKey, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let jay: TestAccount;

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_signing_keys');
  drop = db.drop;
  // The new key is listed first, the active one (the older) second: order decides nothing.
  t = await startTestApp(pds, db.options, {
    keys: [await testSigningKey('rotation-new'), await testSigningKey('rotation-old')],
    activeSigningKid: 'rotation-old',
  });
  jay = await pds.createAccount('jay.test');
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
});

it('binds a new session to activeSigningKid and publishes every key', async () => {
  const browser = new AppBrowser(t.url);
  expect((await browser.login(jay)).status).toBe(302);
  const stored = await t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE).get(jay.did);
  expect(stored?.authMethod).toEqual({ method: 'private_key_jwt', kid: 'rotation-old' });
  const jwks = (await browser.get('/oauth/jwks.json')).body as { keys: Array<{ kid: string }> };
  expect(jwks.keys.map((k) => k.kid).sort()).toEqual(['rotation-new', 'rotation-old']);
  // The session refreshes with its key.
  await t.app.get(AtProtoAuthService).restore(jay.did, true);
  expect((await browser.get('/me/session')).status).toBe(200);
});
