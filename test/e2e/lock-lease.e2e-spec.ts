/**
 * A refresh whose distributed lock was lost (taken over by another instance after this one
 * stalled) must not send the refresh token: it is single-use, and the other holder may
 * present it too, which makes the authorization server revoke the whole grant. The token
 * request is counted at the real PDS; the lock is real Redlock on Redis.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import {
  AT_PROTO_SESSION_STORE,
  AtProtoAuthService,
  type AtProtoSessionStore,
} from 'nestjs-atproto-auth';
import { sessionLockName } from '../../lib/lock/lock-scope.js';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let ivy: TestAccount;
let redis: Redis;
const prefix = `lease-${randomBytes(4).toString('hex')}:`;

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_lock_lease');
  drop = db.drop;
  // httpTimeout 1 s: the lock lives 6 s and is renewed every 3 s.
  t = await startTestApp(pds, db.options, {
    redis: 'redis://127.0.0.1:6379',
    redisKeyPrefix: prefix,
    httpTimeout: 1000,
  });
  redis = new Redis('redis://127.0.0.1:6379');
  ivy = await pds.createAccount('ivy.test');
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

const refreshes = () => pds.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;

it('a holder whose lock was taken over sends no token request and keeps the session', async () => {
  const browser = new AppBrowser(t.url);
  expect((await browser.login(ivy)).status).toBe(302);
  const store = t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
  const before = await store.get(ivy.did);

  // The holder stalls right after taking the lock (its read hangs for 4 s, longer than a
  // renewal period) while another instance takes the lock over.
  const s = store as AtProtoSessionStore & { getVersioned?: (did: string) => Promise<unknown> };
  const read = (s.getVersioned ?? s.get).bind(s);
  let stalled = false;
  const stall = async (did: string) => {
    if (!stalled) {
      stalled = true;
      await sleep(4000);
    }
    return read(did);
  };
  if (s.getVersioned) s.getVersioned = stall;
  else s.get = stall as typeof s.get;

  const count = refreshes();
  const refreshing = t.app
    .get(AtProtoAuthService)
    .restore(ivy.did, true)
    .then(
      () => 'refreshed',
      (e: unknown) => e,
    );
  await sleep(500);
  const key = `${prefix}lock:${sessionLockName(ivy.did)}`;
  expect(await redis.exists(key)).toBe(1); // the holder has it
  await redis.set(key, 'another-instance', 'PX', 60_000);

  const outcome = await refreshing;
  expect(stalled).toBe(true);
  expect(outcome).not.toBe('refreshed');
  expect(refreshes()).toBe(count); // the refresh token never left the process
  expect(await redis.get(key)).toBe('another-instance'); // not taken back
  await redis.del(key);
  expect(await store.get(ivy.did)).toEqual(before);
  // Once the lock is free again, the session refreshes normally.
  await t.app.get(AtProtoAuthService).restore(ivy.did, true);
  expect(refreshes()).toBe(count + 1);
});
