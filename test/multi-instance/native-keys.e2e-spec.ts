/**
 * Native apps and API keys across app instances (separate processes of the sample, one
 * PostgreSQL database, Redis for the lock): a refresh token rotated on one instance and
 * replayed on another ends the device everywhere; an API key revoked in the database is
 * refused by every instance within the app-session cache's bound (2 s).
 */
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { TypeOrmApiKeyStore } from 'nestjs-atproto-auth';
import { generateApiKey } from '../../lib/api-keys/api-key-format.js';
import { CookieJar } from '../e2e/support/cookie-jar.js';
import { signInAndConsent } from '../e2e/support/pds.js';
import { OwnRedis } from '../support/redis-server.js';
import { Cluster, type AppInstance } from './support/cluster.js';

let redis: OwnRedis;
let cluster: Cluster;

beforeAll(async () => {
  [redis, cluster] = await Promise.all([
    OwnRedis.start(),
    Cluster.start({ label: 'mi_native', instances: 2 }),
  ]);
  await cluster.startInstances({ REDIS_URL: redis.url });
}, 180_000);
afterAll(async () => {
  await cluster?.stop();
  await redis?.stop();
}, 60_000);

async function send(
  instance: AppInstance,
  method: 'GET' | 'POST',
  path: string,
  headers: Record<string, string> = {},
  form?: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown>; location?: string }> {
  const res = await request(`${instance.url}${path}`, {
    method,
    dispatcher: cluster.http,
    headers: {
      ...headers,
      ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    },
    body: form ? new URLSearchParams(form).toString() : undefined,
  });
  const text = await res.body.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // not JSON
  }
  const location = res.headers.location;
  return {
    status: res.statusCode,
    body,
    location: typeof location === 'string' ? location : undefined,
  };
}

it('a refresh token rotated on one instance and replayed on another ends the device everywhere', async () => {
  const [a, b] = cluster.instances as [AppInstance, AppInstance];
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const redirectUri = 'http://127.0.0.1:41234/cli';
  const jar = new CookieJar();
  const q = new URLSearchParams({
    input: cluster.account.handle,
    redirect_uri: redirectUri,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 'mi',
  });
  const start = await request(`${a.url}/oauth/login?${q}`, { dispatcher: cluster.http });
  jar.store(start.headers['set-cookie']);
  await start.body.dump();
  const { callbackParams } = await signInAndConsent(String(start.headers.location), {
    username: cluster.account.handle,
    password: cluster.account.password,
  });
  const back = await send(a, 'GET', `/oauth/callback?${callbackParams}`, { cookie: jar.header() });
  const code = new URL(back.location!).searchParams.get('code')!;

  const p1 = await send(
    a,
    'POST',
    '/oauth/token',
    {},
    {
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      redirect_uri: redirectUri,
    },
  );
  expect(p1.status).toBe(200);
  const p2 = await send(
    b,
    'POST',
    '/oauth/token',
    {},
    {
      grant_type: 'refresh_token',
      refresh_token: p1.body.refresh_token as string,
    },
  );
  expect(p2.status).toBe(200);
  const p3 = await send(
    b,
    'POST',
    '/oauth/token',
    {},
    {
      grant_type: 'refresh_token',
      refresh_token: p2.body.refresh_token as string,
    },
  );
  expect(p3.status).toBe(200);
  const bearer = { authorization: `Bearer ${p3.body.access_token as string}` };
  for (const instance of [a, b]) {
    expect((await send(instance, 'GET', '/api/session', bearer)).status).toBe(200);
  }

  const replay = await send(
    a,
    'POST',
    '/oauth/token',
    {},
    {
      grant_type: 'refresh_token',
      refresh_token: p1.body.refresh_token as string,
    },
  );
  expect(replay.status).toBe(400);
  expect(replay.body.error).toBe('invalid_grant');
  await sleep(2500); // appSession.cacheTtl: the bound for instances that cached the device
  for (const instance of [a, b]) {
    expect((await send(instance, 'GET', '/api/session', bearer)).status).toBe(401);
  }
  const after = await send(
    b,
    'POST',
    '/oauth/token',
    {},
    {
      grant_type: 'refresh_token',
      refresh_token: p3.body.refresh_token as string,
    },
  );
  expect(after.status).toBe(400);
}, 120_000);

it('an API key works on every instance, and a revoked one is refused by all within the bound', async () => {
  const store = new TypeOrmApiKeyStore(cluster.dataSource);
  const { key, id, displayPrefix } = generateApiKey('atp_');
  const now = new Date();
  await store.create({
    id,
    did: cluster.account.did,
    name: 'mi bot',
    displayPrefix,
    scopes: null,
    createdAt: now,
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
  });
  const auth = { authorization: `Bearer ${key}` };
  // The account has an OAuth session from the first test's login.
  for (const instance of cluster.instances) {
    const res = await send(instance, 'GET', '/api/session', auth);
    expect(res.status).toBe(200);
    expect(res.body.did).toBe(cluster.account.did);
  }
  expect(await store.revoke(id, cluster.account.did, new Date())).toBe(true);
  await sleep(2500);
  for (const instance of cluster.instances) {
    expect((await send(instance, 'GET', '/api/session', auth)).status).toBe(401);
  }
}, 60_000);
