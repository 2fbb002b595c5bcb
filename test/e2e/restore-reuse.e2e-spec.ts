/**
 * `AtProtoAuthService.restore(did)` reuses the session object it restored for a DID while
 * the stored session keeps its issuer, auth method and DPoP key (and for at most a minute),
 * reading the store on every call: against the real local PDS, a second restore does not
 * run the OAuth client's restore again and still acts as the user; a new login (a new DPoP
 * key), a logout and the end of the minute are each seen at once.
 */
import {
  AT_PROTO_SESSION_STORE,
  AtProtoAuthService,
  type AtProtoSessionStore,
  AtProtoSessionUnavailableError,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let alice: TestAccount;

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_restore_reuse');
  drop = db.drop;
  t = await startTestApp(pds, db.options);
  alice = await pds.createAccount('reuse-alice.test');
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
});

async function getSession(session: { fetchHandler(path: string): Promise<Response> }) {
  const res = await session.fetchHandler('/xrpc/com.atproto.server.getSession');
  return { status: res.status, body: (await res.json()) as { did?: string } };
}

it('reuses the restored session while the stored one is the same, and sees every change', async () => {
  const auth = t.app.get(AtProtoAuthService);
  const client = auth.oauthClient;
  const original = client.restore.bind(client);
  let clientRestores = 0;
  client.restore = (...args) => {
    clientRestores++;
    return original(...args);
  };
  try {
    const first = new AppBrowser(t.url);
    expect((await first.login(alice)).status).toBe(302);

    const a = await auth.restore(alice.did);
    const b = await auth.restore(alice.did);
    expect(b).toBe(a);
    expect(clientRestores).toBe(1);
    expect(await getSession(b)).toEqual({
      status: 200,
      body: expect.objectContaining({ did: alice.did }),
    });

    // A new login stores a new DPoP key: the next restore builds a new session, which works.
    const second = new AppBrowser(t.url);
    expect((await second.login(alice)).status).toBe(302);
    // (A short reuse window from here on, to see its end below.)
    auth.restoredReuseMs = 2_000;
    const c = await auth.restore(alice.did);
    expect(c).not.toBe(a);
    expect(clientRestores).toBe(2);
    expect(await getSession(c)).toMatchObject({ status: 200 });
    expect(await auth.restore(alice.did)).toBe(c);

    // After the reuse window the object is built again (its server metadata may be that old).
    try {
      await new Promise((resolve) => setTimeout(resolve, 2_100));
      const d = await auth.restore(alice.did);
      expect(d).not.toBe(c);
      expect(clientRestores).toBe(3);
    } finally {
      auth.restoredReuseMs = 60_000;
    }

    // Logged out everywhere: the session is gone, whatever was kept.
    expect((await second.post('/oauth/logout?everywhere=1')).status).toBe(204);
    await expect(auth.restore(alice.did)).rejects.toBeInstanceOf(AtProtoSessionUnavailableError);
    // ... and nothing of it is kept (its DPoP key included).
    expect(auth.restoredCount).toBe(0);
  } finally {
    client.restore = original;
  }
});

it('a session object restored before the user signed in again does not end the new login', async () => {
  const auth = t.app.get(AtProtoAuthService);
  const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
  const first = new AppBrowser(t.url);
  expect((await first.login(alice)).status).toBe(302);
  const held = await auth.restore(alice.did);
  // The user signs in again elsewhere: a new session, with a new DPoP key.
  const second = new AppBrowser(t.url);
  expect((await second.login(alice)).status).toBe(302);
  const renewed = await store.get(alice.did);
  // The old object must not send the new token with its old key (the PDS refuses it, and the
  // OAuth client would then delete the new session): it refuses, and nothing is deleted.
  await expect(getSession(held)).rejects.toThrow(/signed in again/);
  expect(await store.get(alice.did)).toEqual(renewed);
  expect((await second.get('/me/session')).body).toMatchObject({ status: 200 });
  expect(await getSession(await auth.restore(alice.did))).toMatchObject({ status: 200 });
});

it('keeps at most restoredMaxEntries objects, least recently used out', async () => {
  const auth = t.app.get(AtProtoAuthService);
  const bob = await pds.createAccount('reuse-bob.test');
  const carol = await pds.createAccount('reuse-carol.test');
  for (const account of [alice, bob, carol]) {
    expect((await new AppBrowser(t.url).login(account)).status).toBe(302);
  }
  auth.restoredMaxEntries = 2;
  try {
    const a = await auth.restore(alice.did);
    const b = await auth.restore(bob.did);
    expect(await auth.restore(alice.did)).toBe(a); // alice is now the most recently used
    await auth.restore(carol.did); // bob goes
    expect(auth.restoredCount).toBe(2);
    expect(await auth.restore(alice.did)).toBe(a);
    expect(await auth.restore(bob.did)).not.toBe(b);
  } finally {
    auth.restoredMaxEntries = 10_000;
  }
});
