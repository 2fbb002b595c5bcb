/**
 * SSRF through redirects: an attacker runs their own PDS and authorization server (anyone
 * can, and anyone can start a login with it: `GET /oauth/login?input=<their server>`), and
 * answers with a 307 towards an internal address. The module must never connect there, from
 * any endpoint the OAuth client talks to (PAR, token for a code or a refresh, revocation, a
 * PDS call through the session), must keep the session when a refresh is refused this way,
 * and must answer with a clean error, never a 500.
 *
 * Only the fake server is on the private-host allow-list, as in production only a local
 * test PDS would be: the 307 target is another loopback port, outside it.
 */
import { JoseKey } from '@atproto/oauth-client-node';
import {
  AT_PROTO_SESSION_STORE,
  AtProtoAuthService,
  type AtProtoSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import {
  startConnectionCounter,
  startFakeAuthorizationServer,
  type FakeAuthorizationServer,
} from './support/fake-authorization-server.js';
import type { TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let fake: FakeAuthorizationServer;
let internal: Awaited<ReturnType<typeof startConnectionCounter>>;
let t: TestApp;
let drop: () => Promise<void>;

const DID = 'did:plc:ssrfssrfssrfssrfssrfssrf';

beforeAll(async () => {
  fake = await startFakeAuthorizationServer();
  internal = await startConnectionCounter();
  const db = await createTestDatabase('sqlite', 'e2e_ssrf');
  drop = db.drop;
  t = await startTestApp({ url: fake.origin, plcUrl: fake.origin } as TestPds, db.options, {
    dangerouslyAllowPrivateHosts: [fake.host],
  });
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await fake?.close();
  await internal?.close();
});
beforeEach(() => {
  fake.routes.clear();
  fake.requests.length = 0;
});

const redirectInside = () => (_req: unknown, res: import('node:http').ServerResponse) =>
  res.writeHead(307, { Location: `${internal.url}/admin/flush` }).end();

/** Stores an OAuth session whose issuer and PDS are the fake server. */
async function storeSession(expiresAt: Date): Promise<void> {
  const dpop = await JoseKey.generate(['ES256']);
  await t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE).set(DID, {
    dpopJwk: dpop.privateJwk!,
    authMethod: { method: 'private_key_jwt', kid: 'k1' },
    tokenSet: {
      iss: fake.origin,
      sub: DID,
      aud: fake.origin,
      scope: 'atproto transition:generic',
      access_token: 'access-token-of-the-test',
      refresh_token: 'refresh-token-of-the-test',
      token_type: 'DPoP',
      expires_at: expiresAt.toISOString(),
    },
  } as never);
}

it('names the private hosts it may reach in a boot warning', () => {
  expect(t.logs.join('\n')).toMatch(
    new RegExp(
      `warn \\[AtProtoModule\\] dangerouslyAllowPrivateHosts: .*${fake.host.replace(/\./g, '\\.')}`,
    ),
  );
});

it('PAR answered with a 307 inside: no connection, a clean 502', async () => {
  fake.routes.set('/par', redirectInside());
  const res = await new AppBrowser(t.url).get(
    `/oauth/login?input=${encodeURIComponent(fake.origin)}`,
  );
  expect(fake.requests).toContain('POST /par');
  expect(res.status).toBe(502);
  expect(internal.connections()).toBe(0);
});

it('token request of a callback answered with a 307 inside: no connection, no 500', async () => {
  fake.routes.set('/par', (_req, res) =>
    res
      .writeHead(201, { 'Content-Type': 'application/json' })
      .end(JSON.stringify({ request_uri: 'urn:ietf:params:oauth:request_uri:x', expires_in: 60 })),
  );
  fake.routes.set('/token', redirectInside());
  const browser = new AppBrowser(t.url);
  await browser.startLogin(fake.origin);
  const state = fake.forms.get('/par')?.get('state');
  expect(state).toBeTruthy();
  const q = new URLSearchParams({ state: state!, code: 'code-of-the-test', iss: fake.origin });
  const res = await browser.get(`/oauth/callback?${q}`);
  expect(fake.requests).toContain('POST /token');
  expect(res.status).toBe(502);
  expect(internal.connections()).toBe(0);
});

it('refresh answered with a 307 inside: no connection, the session is kept', async () => {
  await storeSession(new Date(Date.now() - 1000)); // expired: a restore refreshes
  fake.routes.set('/token', redirectInside());
  const auth = t.app.get(AtProtoAuthService);
  await expect(auth.restore(DID, true)).rejects.toMatchObject({ code: 'ERR_AT_PROTO_UPSTREAM' });
  expect(fake.requests).toContain('POST /token');
  expect(internal.connections()).toBe(0);
  const stored = await t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE).get(DID);
  expect(stored?.tokenSet.refresh_token).toBe('refresh-token-of-the-test');
});

it('a PDS call through the session answered with a 307 inside: no connection', async () => {
  await storeSession(new Date(Date.now() + 3_600_000)); // fresh: no refresh needed
  fake.routes.set('/xrpc/', redirectInside());
  const session = await t.app.get(AtProtoAuthService).restore(DID);
  await expect(session.fetchHandler('/xrpc/com.atproto.server.getSession')).rejects.toBeDefined();
  expect(fake.requests).toContain('GET /xrpc/com.atproto.server.getSession');
  expect(internal.connections()).toBe(0);
});

it('revocation answered with a 307 inside: no connection, deleted locally', async () => {
  await storeSession(new Date(Date.now() + 3_600_000));
  fake.routes.set('/revoke', redirectInside());
  await t.app.get(AtProtoAuthService).revoke(DID);
  expect(fake.requests).toContain('POST /revoke');
  expect(internal.connections()).toBe(0);
  expect(await t.app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE).get(DID)).toBeUndefined();
});

it('an error text with control characters reaches the logs escaped (log injection)', async () => {
  fake.routes.set('/par', (_req, res) =>
    res.writeHead(400, { 'Content-Type': 'application/json' }).end(
      JSON.stringify({
        error: 'invalid_request',
        error_description: 'forged\n[Nest] 1 - LOG fake line\x1b[31m red\u2028sep\u202eevil',
      }),
    ),
  );
  const before = t.logs.length;
  const res = await new AppBrowser(t.url).get(
    `/oauth/login?input=${encodeURIComponent(fake.origin)}`,
  );
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(600);
  expect(res.status).not.toBe(500);
  const written = t.logs.slice(before).join('\n');
  expect(written).toContain('forged');
  for (const raw of ['\nforged', 'forged\n', '\x1b', '\u2028', '\u202e']) {
    expect(written).not.toContain(raw);
  }
});
