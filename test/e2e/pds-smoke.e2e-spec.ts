/**
 * Proves the in-process PDS harness supports a full confidential OAuth flow with
 * `@atproto/oauth-client-node` under our Jest setup: PAR + DPoP + private_key_jwt, code
 * exchange, an XRPC call, a forced refresh, sign-out and revocation.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  JoseKey,
  NodeOAuthClient,
  requestLocalLock,
  type NodeSavedSession,
  type NodeSavedSessionStore,
  type NodeSavedState,
  type NodeSavedStateStore,
  type OAuthClientMetadataInput,
} from '@atproto/oauth-client-node';
import {
  forwardOriginToLocal,
  signInAndConsent,
  startTestPds,
  type TestAccount,
  type TestPds,
} from './support/pds.js';

const APP_ORIGIN = 'https://app.e2e.internal';

class MemoryStore<V extends NonNullable<unknown>> {
  readonly map = new Map<string, V>();
  get(key: string): V | undefined {
    return this.map.get(key);
  }
  set(key: string, value: V): void {
    this.map.set(key, value);
  }
  del(key: string): void {
    this.map.delete(key);
  }
}

describe('in-process PDS harness (smoke)', () => {
  let pds: TestPds;
  let alice: TestAccount;
  let appServer: Server;
  let restoreFetch: (() => void) | undefined;
  let client: NodeOAuthClient;
  const stateStore = new MemoryStore<NodeSavedState>();
  const sessionStore = new MemoryStore<NodeSavedSession>();

  beforeAll(async () => {
    pds = await startTestPds();
    alice = await pds.createAccount('alice.test');

    const key = await JoseKey.generate(['ES256'], 'k1');
    const clientMetadata: OAuthClientMetadataInput = {
      client_id: `${APP_ORIGIN}/client-metadata.json`,
      client_name: 'e2e smoke',
      redirect_uris: [`${APP_ORIGIN}/callback`],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      dpop_bound_access_tokens: true,
      scope: 'atproto transition:generic',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      application_type: 'web',
      jwks_uri: `${APP_ORIGIN}/jwks.json`,
    };
    client = new NodeOAuthClient({
      clientMetadata,
      keyset: [key],
      stateStore: stateStore satisfies NodeSavedStateStore,
      sessionStore: sessionStore satisfies NodeSavedSessionStore,
      requestLock: requestLocalLock,
      allowHttp: true,
      handleResolver: pds.url,
      plcDirectoryUrl: pds.plcUrl,
    });

    const documents: Record<string, unknown> = {
      '/client-metadata.json': client.clientMetadata,
      '/jwks.json': client.jwks,
    };
    appServer = createServer((req, res) => {
      const doc = documents[(req.url ?? '').split('?', 1)[0] ?? ''];
      if (doc === undefined) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
    });
    await new Promise<void>((resolve) => appServer.listen(0, '127.0.0.1', resolve));
    const { port } = appServer.address() as AddressInfo;
    restoreFetch = forwardOriginToLocal(APP_ORIGIN, `http://127.0.0.1:${port}`);
  });

  afterAll(async () => {
    restoreFetch?.();
    await new Promise<void>((resolve) =>
      appServer ? appServer.close(() => resolve()) : resolve(),
    );
    await pds?.stop();
  });

  it('runs authorize → sign-in/consent → callback → XRPC → refresh → sign-out', async () => {
    const started = performance.now();

    const authorizeUrl = await client.authorize('alice.test', { state: 'smoke-state' });
    expect(authorizeUrl.origin).toBe(pds.url);

    const { callbackParams } = await signInAndConsent(authorizeUrl, {
      username: alice.handle,
      password: alice.password,
    });
    expect(callbackParams.get('iss')).toBe(pds.url);
    expect(callbackParams.get('code')).toBeTruthy();

    const { session, state } = await client.callback(callbackParams);
    expect(state).toBe('smoke-state');
    expect(session.did).toBe(alice.did);
    expect(pds.tokenRequests.filter(ok('authorization_code'))).toHaveLength(1);

    const res = await session.fetchHandler('/xrpc/com.atproto.server.getSession');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ did: alice.did, handle: alice.handle });

    // Forced refresh: exactly one successful refresh_token grant reaches the PDS.
    const before = pds.tokenRequests.filter(ok('refresh_token')).length;
    const refreshed = await client.restore(alice.did, true);
    expect(pds.tokenRequests.filter(ok('refresh_token')).length).toBe(before + 1);
    const again = await refreshed.fetchHandler('/xrpc/com.atproto.server.getSession');
    expect(again.status).toBe(200);

    // Keep the stored (DPoP key + tokens) session to replay it after sign-out.
    const saved = sessionStore.get(alice.did);
    expect(saved).toBeDefined();

    await refreshed.signOut();
    expect(pds.revokeRequests.filter((r) => r.status === 200)).toHaveLength(1);
    expect(sessionStore.get(alice.did)).toBeUndefined();
    await expect(client.restore(alice.did)).rejects.toThrow();

    // Replay the revoked credentials: the access token is refused (401) and the client's
    // automatic refresh with the old refresh token is refused too.
    sessionStore.set(alice.did, structuredClone(saved as NodeSavedSession));
    const refusedAt = pds.tokenRequests.length;
    const stale = await client.restore(alice.did, false);
    const replay = await stale.fetchHandler('/xrpc/com.atproto.server.getSession');
    // fetchHandler retries once through a forced refresh and, when that fails, hands back
    // the original 401.
    expect(replay.status).toBe(401);
    expect(replay.headers.get('www-authenticate')).toContain('invalid_token');
    expect(pds.tokenRequests.slice(refusedAt).map((r) => [r.grantType, r.status])).toEqual([
      ['refresh_token', 400],
    ]);

    const flowMs = performance.now() - started;
    console.log(
      `[pds-smoke] import ${pds.timings.importMs.toFixed(0)} ms, boot ${pds.timings.bootMs.toFixed(0)} ms, flow ${flowMs.toFixed(0)} ms`,
    );
  });

  it('can delay token requests inside the PDS', async () => {
    pds.resetRequestLog();
    pds.setTokenDelay(300);
    try {
      const authorizeUrl = await client.authorize('alice.test');
      const { callbackParams } = await signInAndConsent(authorizeUrl, {
        username: alice.did,
        password: alice.password,
      });
      const started = performance.now();
      const { session } = await client.callback(callbackParams);
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
      expect(pds.tokenRequests.map((r) => [r.grantType, r.status])).toEqual([
        ['authorization_code', 200],
      ]);
      await session.signOut();
    } finally {
      pds.setTokenDelay(0);
    }
  });
});

function ok(grantType: string) {
  return (r: { grantType: string | undefined; status: number | undefined }): boolean =>
    r.grantType === grantType && r.status === 200;
}
