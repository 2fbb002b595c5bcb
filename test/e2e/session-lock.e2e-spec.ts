/**
 * Every deletion and replacement of a user's OAuth session happens under that user's session
 * lock, as one step: a refresh (on this or another instance) can never interleave with a
 * revocation or a login's replacement and store rotated tokens after a delete; another
 * device never sees "no session" in the middle of a replacement; cleanup and logout decide
 * again, under the lock, whether the session is still unused; a failed revocation is not
 * counted and is retried. Against the real PDS, on SQLite.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AppSessionService,
  AT_PROTO_SESSION_STORE,
  AtProtoAppSessionEntity,
  AtProtoAuthService,
  AtProtoCleanupService,
  AtProtoLockError,
  type AtProtoLockLease,
  AtProtoRequestLock,
  type AtProtoSessionStore,
  isSessionEndedError,
} from 'nestjs-atproto-auth';
import { TokenRefreshError } from '@atproto/oauth-client-node';
import { sessionLockName } from '../../lib/lock/lock-scope.js';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
const accounts: TestAccount[] = [];
let n = 0;
const account = async () => {
  const a = await pds.createAccount(`lock${++n}.test`);
  accounts.push(a);
  return a;
};

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_session_lock');
  drop = db.drop;
  t = await startTestApp(pds, db.options);
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
});
afterEach(() => {
  pds.setRevokeDelay(0);
  pds.setTokenDelay(0);
  pds.setTokenResponseDelay(0);
  restorePatches();
});

const store = () => t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
const auth = () => t.app.get(AtProtoAuthService);

/** Monkey patches undone after each test. */
const undo: Array<() => void> = [];
function patch<T extends object, K extends keyof T>(obj: T, key: K, value: T[K]): void {
  const original = obj[key];
  obj[key] = value;
  undo.push(() => {
    obj[key] = original;
  });
}
function restorePatches(): void {
  while (undo.length) undo.pop()!();
}

/** Records which lock names are held (process-wide: the tests run one thing at a time). */
function recordHeldLocks(): Set<string> {
  const held = new Set<string>();
  const lock = t.app.get(AtProtoRequestLock);
  const run = lock.run.bind(lock);
  patch(lock, 'run', ((name: string, fn: (lease: AtProtoLockLease) => unknown) =>
    run(name, async (lease: AtProtoLockLease) => {
      held.add(name);
      try {
        return await fn(lease);
      } finally {
        held.delete(name);
      }
    })) as typeof lock.run);
  return held;
}

it('every write and delete of an OAuth session runs with its DID lock held', async () => {
  const alice = await account();
  const held = recordHeldLocks();
  const calls: Array<{ op: string; locked: boolean }> = [];
  const s = store() as AtProtoSessionStore & Record<string, unknown>;
  for (const op of ['set', 'del', 'setIfVersion', 'delIfVersion'] as const) {
    const original = s[op];
    if (typeof original !== 'function') continue;
    patch(s, op, (async (did: string, ...rest: unknown[]) => {
      calls.push({ op, locked: held.has(sessionLockName(did)) });
      return (original as (...a: unknown[]) => unknown).call(s, did, ...rest);
    }) as never);
  }
  const laptop = new AppBrowser(t.url);
  const phone = new AppBrowser(t.url);
  expect((await laptop.login(alice)).status).toBe(302); // store
  expect((await phone.login(alice)).status).toBe(302); // replace: revoke, delete, store
  await auth().restore(alice.did, true); // refresh: store
  expect((await phone.post('/oauth/logout')).status).toBe(204); // not the last device
  expect((await laptop.post('/oauth/logout')).status).toBe(204); // last: revoke, delete
  expect(calls.filter((c) => c.op.startsWith('set')).length).toBeGreaterThanOrEqual(3);
  expect(calls.filter((c) => c.op.startsWith('del')).length).toBeGreaterThanOrEqual(2);
  expect(calls.filter((c) => !c.locked)).toEqual([]);
});

it('a refresh racing a logout cannot store the session again after the delete', async () => {
  const bob = await account();
  const browser = new AppBrowser(t.url);
  expect((await browser.login(bob)).status).toBe(302);
  // The revocation is slow at the PDS; a forced refresh starts while it is under way, and
  // the PDS answers it late (after rotating).
  pds.setRevokeDelay(1000);
  pds.setTokenResponseDelay(1500);
  const revoking = auth().revoke(bob.did);
  await sleep(300);
  const refreshing = auth()
    .restore(bob.did, true)
    .then(
      () => 'restored',
      (e: unknown) => e,
    );
  await revoking;
  await refreshing;
  await sleep(200);
  expect(await store().get(bob.did)).toBeUndefined();
});

it("another device's request during a login's replacement is not signed out", async () => {
  const carol = await account();
  const first = new AppBrowser(t.url);
  expect((await first.login(carol)).status).toBe(302);
  expect((await first.get('/me/session')).status).toBe(200);

  // The second login's replacement pauses right after deleting the previous session.
  let deleted!: () => void;
  const deletedNow = new Promise<void>((r) => (deleted = r));
  const s = store() as AtProtoSessionStore & Record<string, unknown>;
  for (const op of ['del', 'delIfVersion'] as const) {
    const original = s[op];
    if (typeof original !== 'function') continue;
    patch(s, op, (async (...args: unknown[]) => {
      const result = await (original as (...a: unknown[]) => unknown).apply(s, args);
      deleted();
      await sleep(1000);
      return result;
    }) as never);
  }
  const second = new AppBrowser(t.url);
  const loggingIn = second.login(carol);
  await deletedNow;
  const during = await first.get('/me/session');
  expect((await loggingIn).status).toBe(302);
  expect(during.status).toBe(200);
  restorePatches();
  expect((await first.get('/me/session')).status).toBe(200);
  expect((await second.get('/me/session')).status).toBe(200);
});

it('revoke(did, ifUnused) keeps a session written after the decision or in use again', async () => {
  const dan = await account();
  const browser = new AppBrowser(t.url);
  expect((await browser.login(dan)).status).toBe(302);
  const before = new Date(Date.now() - 60_000);
  // Written (logged in) after `since`: kept.
  expect(await auth().revoke(dan.did, { since: before, inUse: async () => false })).toBe(false);
  // In use: kept.
  expect(await auth().revoke(dan.did, { since: new Date(), inUse: async () => true })).toBe(false);
  expect(await store().get(dan.did)).toBeDefined();
  expect((await browser.get('/me/session')).status).toBe(200);
  // Unused, not written since: revoked.
  const revokes = pds.revokeRequests.length;
  expect(await auth().revoke(dan.did, { since: new Date(), inUse: async () => false })).toBe(true);
  expect(pds.revokeRequests.length).toBe(revokes + 1);
  expect(await store().get(dan.did)).toBeUndefined();
});

it('cleanup does not revoke a session its user signed in with again during the run', async () => {
  const erin = await account();
  const old = new AppBrowser(t.url);
  expect((await old.login(erin)).status).toBe(302);
  // The device idles out; cleanup deletes its app session and decides to revoke...
  await t.dataSource
    .getRepository(AtProtoAppSessionEntity)
    .update({ did: erin.did }, { expiresAt: new Date(Date.now() - 1000) });
  // ...but before it takes the DID's lock to revoke, the user signs in again on another
  // device (the login takes the same lock, so it lands before cleanup's decision under it).
  const fresh = new AppBrowser(t.url);
  const lock = t.app.get(AtProtoRequestLock);
  const run = lock.run.bind(lock);
  let relogged = false;
  patch(lock, 'run', (async (name: string, fn: never) => {
    if (name === sessionLockName(erin.did) && !relogged) {
      relogged = true;
      expect((await fresh.login(erin)).status).toBe(302);
    }
    return run(name, fn);
  }) as typeof lock.run);
  const result = await t.app.get(AtProtoCleanupService).runOnce();
  expect(relogged).toBe(true);
  expect(result.oauthSessionsRevoked).toBe(0);
  restorePatches();
  expect((await fresh.get('/me/session')).status).toBe(200);
});

it('a revocation that fails is not counted and the next cleanup run retries it', async () => {
  const fay = await account();
  const browser = new AppBrowser(t.url);
  expect((await browser.login(fay)).status).toBe(302);
  await t.dataSource
    .getRepository(AtProtoAppSessionEntity)
    .update({ did: fay.did }, { expiresAt: new Date(Date.now() - 1000) });
  // The session lock is unavailable once (Redis down, say) when cleanup revokes.
  const lock = t.app.get(AtProtoRequestLock);
  const run = lock.run.bind(lock);
  let failures = 0;
  patch(lock, 'run', ((name: string, fn: never) => {
    if (name === sessionLockName(fay.did) && failures === 0) {
      failures++;
      return Promise.reject(new AtProtoLockError('Redis is down (test).'));
    }
    return run(name, fn);
  }) as typeof lock.run);
  const revokes = pds.revokeRequests.length;
  const first = await t.app.get(AtProtoCleanupService).runOnce();
  expect(failures).toBe(1);
  expect(first.oauthSessionsRevoked).toBe(0);
  expect(await store().get(fay.did)).toBeDefined();

  const second = await t.app.get(AtProtoCleanupService).runOnce();
  expect(second.oauthSessionsRevoked).toBe(1);
  expect(pds.revokeRequests.length).toBe(revokes + 1);
  expect(await store().get(fay.did)).toBeUndefined();
});

it("a handler that uses another DID's ended session does not sign its caller out", async () => {
  const gus = await account();
  const browser = new AppBrowser(t.url);
  expect((await browser.login(gus)).status).toBe(302);
  const res = await browser.get(`/me/as/${encodeURIComponent('did:plc:nosessionnosessionnosess')}`);
  expect(res.status).toBe(401);
  expect((await browser.get('/me')).status).toBe(200);
  expect(await t.app.get(AppSessionService).hasActive(gus.did)).toBe(true);
});

it('a session that ends inside an Agent call answers 401 and ends this device, not 500', async () => {
  const kim = await account();
  const browser = new AppBrowser(t.url);
  expect((await browser.login(kim)).status).toBe(302);
  expect((await browser.get('/me/agent')).status).toBe(200);
  // The grant is revoked at the server (another client of the user, an admin) while the
  // stored access token still looks fresh: the call gets a 401, the session's own retry
  // refreshes, is refused, and the OAuth client deletes the session.
  const stored = (await store().get(kim.did))!;
  const session = await auth().restore(kim.did);
  await (session as unknown as { server: { revoke(token: string): Promise<void> } }).server.revoke(
    stored.tokenSet.refresh_token!,
  );
  const res = await browser.get('/me/agent');
  expect(res.status).toBe(401);
  expect((await browser.get('/me')).status).toBe(401); // this device's app session ended too
});

/** Revokes `acct`'s grant at the authorization server while its stored token looks fresh. */
async function revokeGrantAtServer(did: string): Promise<void> {
  const stored = (await store().get(did))!;
  const session = await auth().restore(did);
  await (session as unknown as { server: { revoke(token: string): Promise<void> } }).server.revoke(
    stored.tokenSet.refresh_token!,
  );
}

it('several Agent calls at once on an ended session: 401 and this device signed out', async () => {
  const ida = await account();
  const browser = new AppBrowser(t.url);
  expect((await browser.login(ida)).status).toBe(302);
  expect((await browser.get('/me/agent-many')).status).toBe(200);
  await revokeGrantAtServer(ida.did);
  expect((await browser.get('/me/agent-many')).status).toBe(401);
  expect((await browser.get('/me')).status).toBe(401);
});

it("fetchHandler() throws the OAuth client's own error, not the PDS's 401, when the refresh is refused", async () => {
  const jon = await account();
  const browser = new AppBrowser(t.url);
  expect((await browser.login(jon)).status).toBe(302);
  await revokeGrantAtServer(jon.did);
  const session = await auth().restore(jon.did);
  const error = await session.fetchHandler('/xrpc/com.atproto.server.getSession').then(
    (res) => res,
    (e: unknown) => e,
  );
  // What code written against @atproto/oauth-client recognizes, and isSessionEndedError too.
  expect(error).toBeInstanceOf(TokenRefreshError);
  expect(isSessionEndedError(error)).toBe(true);
  expect((error as TokenRefreshError).sub).toBe(jon.did);
});

it("the app's own 401 is left alone, even when the user's OAuth session is gone", async () => {
  const lea = await account();
  const browser = new AppBrowser(t.url);
  expect((await browser.login(lea)).status).toBe(302);
  await store().del(lea.did); // gone (expired, deleted elsewhere): not ended by this request
  const res = await browser.get('/me/pin');
  expect(res.status).toBe(401);
  expect(JSON.stringify(res.body)).toContain('Wrong PIN');
  expect((await browser.get('/me')).status).toBe(200); // still signed in here
});
