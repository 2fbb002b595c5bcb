/**
 * Outbound service-auth tokens against the real local PDS: the token it mints for a test
 * service DID (signature checked against the account's key in its DID document), the cache
 * (hits, margin, expiry, the sweep), one request to the PDS for 100 concurrent callers, invalidation,
 * the 401 retry of fetchWithServiceAuth against a real HTTP server, the PDS's refusals
 * mapped to stable reasons, and no token in the logs.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { verifySignature } from '@atproto/crypto';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import {
  AtProtoServiceAuthError,
  AtProtoSessionUnavailableError,
  AtProtoServiceAuthService,
  type AtProtoServiceAuthRefusal,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from './support/app-client.js';
import { signInAndConsent, startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

/** The service the tokens are for: nothing resolves it, the PDS only signs for it. */
const SERVICE = 'did:web:feed.e2e.internal';
const FEED = 'app.bsky.feed.getFeedSkeleton';
const NSID = 'app.bsky.feed.getFeed';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let olga: TestAccount;
let audience: Audience;
let serviceAuth: AtProtoServiceAuthService;
/** Requests for com.atproto.server.getServiceAuth that the PDS's handler answered. */
const minted: URLSearchParams[] = [];
/** Every token the tests were handed, to look for in the logs at the end. */
const seen = new Set<string>();

/** Counts getServiceAuth requests where they arrive: in front of the PDS's own listener. */
function countServiceAuthRequests(server: Server): void {
  const listeners = server.listeners('request') as RequestListener[];
  server.removeAllListeners('request');
  server.on('request', (req, res) => {
    const url = new URL(req.url ?? '/', 'http://pds');
    if (url.pathname === '/xrpc/com.atproto.server.getServiceAuth') {
      // A 401 here is the PDS asking for a fresh DPoP nonce (the OAuth session then sends
      // the request again): it never reached the handler, and minted nothing.
      res.once('finish', () => {
        if (res.statusCode !== 401) minted.push(url.searchParams);
      });
    }
    for (const listener of listeners) listener.call(server, req, res);
  });
}

/** A small service that checks nothing but answers 401 to the tokens it is told to refuse. */
interface Audience {
  url: string;
  server: Server;
  requests: { authorization: string | undefined; body: string }[];
  /** How many of the next requests get a 401. */
  refuseNext: number;
}
async function startAudience(): Promise<Audience> {
  const audience: Audience = { url: '', server: undefined as never, requests: [], refuseNext: 0 };
  audience.server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      audience.requests.push({
        authorization: req.headers.authorization,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      if (audience.refuseNext > 0) {
        audience.refuseNext--;
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'BadJwtSignature', message: 'refused' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true }));
    });
  });
  audience.server.listen(0, '127.0.0.1');
  await once(audience.server, 'listening');
  audience.url = `http://127.0.0.1:${(audience.server.address() as AddressInfo).port}`;
  return audience;
}

async function token(lxm: string | null = FEED, exp?: number, aud = SERVICE): Promise<string> {
  const value = await serviceAuth.getToken(olga.did, { aud, lxm, ...(exp ? { exp } : {}) });
  seen.add(value);
  return value;
}

async function refusal(promise: Promise<unknown>): Promise<AtProtoServiceAuthRefusal> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AtProtoServiceAuthError);
  expect((error as AtProtoServiceAuthError).code).toBe('ERR_AT_PROTO_SERVICE_AUTH');
  return (error as AtProtoServiceAuthError).reason;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

beforeAll(async () => {
  pds = await startTestPds();
  countServiceAuthRequests(pds.pds.server as Server);
  audience = await startAudience();
  const db = await createTestDatabase('sqlite', 'e2e_service_auth');
  drop = db.drop;
  t = await startTestApp(pds, db.options, {
    dangerouslyAllowPrivateHosts: [
      new URL(pds.url).host,
      new URL(pds.plcUrl).host,
      new URL(audience.url).host,
    ],
    serviceAuth: { sweepInterval: 1000 },
  });
  serviceAuth = t.app.get(AtProtoServiceAuthService);
  olga = await pds.createAccount('olga.test');
  const login = await new AppBrowser(t.url).login(olga);
  expect(login.status).toBe(302);
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
  audience?.server.close();
});
beforeEach(async () => {
  await serviceAuth.invalidate(olga.did);
  minted.length = 0;
  audience.requests.length = 0;
  audience.refuseNext = 0;
});

describe('a token minted by the PDS', () => {
  it('is signed by the account key for the service and method asked, and cached', async () => {
    const first = await token();
    const claims = decodeJwt(first);
    expect(claims).toMatchObject({ iss: olga.did, aud: SERVICE, lxm: FEED });
    expect(typeof claims.exp).toBe('number');
    expect(decodeProtectedHeader(first).alg).toBe('ES256K');
    // Verified as an audience would: against the account's #atproto key, as registered in
    // the PLC directory.
    const data = (await (await fetch(`${pds.plcUrl}/${olga.did}/data`)).json()) as {
      verificationMethods: { atproto: string };
    };
    const [header, payload, signature] = first.split('.') as [string, string, string];
    expect(
      await verifySignature(
        data.verificationMethods.atproto,
        new TextEncoder().encode(`${header}.${payload}`),
        Buffer.from(signature, 'base64url'),
      ),
    ).toBe(true);
    expect(minted).toHaveLength(1);
    expect(minted[0]?.get('aud')).toBe(SERVICE);
    expect(minted[0]?.get('lxm')).toBe(FEED);

    const before = serviceAuth.stats();
    expect(await token()).toBe(first);
    expect(minted).toHaveLength(1);
    expect(serviceAuth.stats()).toMatchObject({ hits: before.hits + 1, misses: before.misses });
  });

  it('passes exp to the PDS and keeps the token until exp minus the margin', async () => {
    // 14 s asked, 10 s margin: handed out for 3 to 4 s.
    const first = await token(FEED, nowSeconds() + 14);
    expect(minted[0]?.get('exp')).toBe(String(decodeJwt(first).exp));
    expect(await token(FEED)).toBe(first);
    expect(minted).toHaveLength(1);
    const validUntil = (decodeJwt(first).exp as number) * 1000 - 10_000;
    const entries = serviceAuth.stats().entries;
    await sleep(validUntil - Date.now() + 50);
    // The sweep (every second in this app) drops it without a read.
    let swept = false;
    for (let i = 0; i < 50 && !swept; i++) {
      swept = serviceAuth.stats().entries < entries;
      if (!swept) await sleep(100);
    }
    expect(swept).toBe(true);
    const second = await token(FEED);
    expect(second).not.toBe(first);
    expect(minted).toHaveLength(2);
  });

  it('does not keep a token that the PDS made shorter than the margin', async () => {
    const a = await token(FEED, nowSeconds() + 5);
    const b = await token(FEED, nowSeconds() + 5);
    expect(b).not.toBe(a);
    expect(minted).toHaveLength(2);
  });
});

describe('single flight', () => {
  it('sends one request to the PDS for 100 concurrent callers of one key', async () => {
    const before = serviceAuth.stats();
    const tokens = await Promise.all(Array.from({ length: 100 }, () => token(NSID)));
    expect(minted).toHaveLength(1);
    expect(new Set(tokens).size).toBe(1);
    const after = serviceAuth.stats();
    expect(after.misses - before.misses).toBe(1);
    expect(after.hits - before.hits).toBe(99);
  });
});

describe('invalidation', () => {
  it('drops the tokens of a DID for one audience, or all of them', async () => {
    const feed = await token(FEED);
    const other = await token(FEED, undefined, 'did:web:other.e2e.internal');
    await serviceAuth.invalidate(olga.did, SERVICE);
    expect(await token(FEED, undefined, 'did:web:other.e2e.internal')).toBe(other);
    const fresh = await token(FEED);
    expect(fresh).not.toBe(feed);
    expect(minted).toHaveLength(3);
    await serviceAuth.invalidate(olga.did);
    expect(await token(FEED, undefined, 'did:web:other.e2e.internal')).not.toBe(other);
    expect(minted).toHaveLength(4);
  });
});

describe('fetchWithServiceAuth', () => {
  it('sends the token, and after a 401 retries once with a fresh one and the same body', async () => {
    const cached = await token(FEED);
    audience.refuseNext = 1;
    const res = await serviceAuth.fetchWithServiceAuth(
      olga.did,
      { aud: SERVICE, lxm: FEED },
      `${audience.url}/xrpc/${FEED}`,
      {
        method: 'POST',
        body: '{"feed":"at://x"}',
        headers: { 'content-type': 'application/json' },
      },
    );
    expect(res.status).toBe(200);
    expect(audience.requests.map((r) => r.body)).toEqual([
      '{"feed":"at://x"}',
      '{"feed":"at://x"}',
    ]);
    const [refused, retried] = audience.requests.map((r) => r.authorization);
    expect(refused).toBe(`Bearer ${cached}`);
    expect(retried).toMatch(/^Bearer /);
    expect(retried).not.toBe(refused);
    seen.add(retried!.slice(7));
    expect(minted).toHaveLength(2);
    // The fresh token is the cached one now.
    expect(await token(FEED)).toBe(retried!.slice(7));
  });

  it('returns the 401 when the body cannot be sent again, and mints a new token next time', async () => {
    const cached = await token(FEED);
    audience.refuseNext = 1;
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('streamed'));
        c.close();
      },
    });
    const res = await serviceAuth.fetchWithServiceAuth(
      olga.did,
      { aud: SERVICE, lxm: FEED },
      `${audience.url}/xrpc/${FEED}`,
      { method: 'POST', body: stream, duplex: 'half' } as RequestInit,
    );
    expect(res.status).toBe(401);
    expect(audience.requests).toHaveLength(1);
    expect(await token(FEED)).not.toBe(cached);
  });

  it('gives up after one retry', async () => {
    audience.refuseNext = 5;
    const res = await serviceAuth.fetchWithServiceAuth(
      olga.did,
      { aud: SERVICE, lxm: FEED },
      `${audience.url}/xrpc/${FEED}`,
    );
    expect(res.status).toBe(401);
    expect(audience.requests).toHaveLength(2);
  });

  it('refuses a private address that is not listed, sending nothing', async () => {
    const other = await startAudience();
    try {
      await expect(
        serviceAuth.fetchWithServiceAuth(olga.did, { aud: SERVICE, lxm: FEED }, `${other.url}/x`),
      ).rejects.toThrow(/refused/i);
      expect(other.requests).toHaveLength(0);
    } finally {
      other.server.close();
    }
  });
});

describe('refusals', () => {
  it.each<[string, () => Promise<unknown>, AtProtoServiceAuthRefusal]>([
    ['a protected method', () => token('com.atproto.server.createAppPassword'), 'protected-method'],
    ['exp more than an hour ahead', () => token(FEED, nowSeconds() + 7200), 'expiration-too-far'],
    [
      'a method-less token for more than a minute',
      () => token(null, nowSeconds() + 120),
      'methodless-expiration-too-far',
    ],
  ])('maps %s, without retrying or caching it', async (_, ask, reason) => {
    expect(await refusal(ask())).toBe(reason);
    expect(minted).toHaveLength(1);
    expect(await refusal(ask())).toBe(reason);
    expect(minted).toHaveLength(2);
  });

  it('refuses what the PDS would refuse before asking it', async () => {
    expect(await refusal(token(FEED, Date.now() + 60_000))).toBe('invalid-request'); // ms, not s
    expect(await refusal(token('not an nsid'))).toBe('invalid-request');
    expect(await refusal(token(FEED, undefined, 'https://feed.example.com'))).toBe(
      'invalid-request',
    );
    expect(minted).toHaveLength(0);
  });

  it('says the session has ended for a user without one, asking the PDS nothing', async () => {
    const nobody = await pds.createAccount('nobody.test');
    await expect(serviceAuth.getToken(nobody.did, { aud: SERVICE, lxm: FEED })).rejects.toThrow(
      AtProtoSessionUnavailableError,
    );
    expect(minted).toHaveLength(0);
  });

  it('maps a scope that was not granted', async () => {
    const piet = await pds.createAccount('piet.test');
    const browser = new AppBrowser(t.url);
    const authorizeUrl = await browser.startLogin(piet.handle);
    // Piet consents to less than the app asked for: no transition:generic, so no rpc.
    const { callbackParams } = await signInAndConsent(
      authorizeUrl,
      { username: piet.handle, password: piet.password },
      { scope: 'atproto' },
    );
    expect((await browser.get(`/oauth/callback?${callbackParams}`)).status).toBe(302);
    const error = await serviceAuth
      .getToken(piet.did, { aud: SERVICE, lxm: FEED })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AtProtoServiceAuthError);
    expect((error as AtProtoServiceAuthError).reason).toBe('scope-not-granted');
    expect((error as AtProtoServiceAuthError).message).toContain(`rpc:${FEED}?aud=${SERVICE}`);
  });
});

describe('logs', () => {
  it('never carry a token', () => {
    expect(seen.size).toBeGreaterThan(5);
    const logs = t.logs.join('\n');
    for (const value of seen) {
      expect(logs).not.toContain(value);
      expect(logs).not.toContain(value.split('.')[2]);
    }
  });
});
