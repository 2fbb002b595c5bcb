/**
 * Inbound service auth against the real local PDS and PLC: a token the PDS mints for a user
 * (through AtProtoServiceAuthService, over the user's OAuth session) is accepted by an
 * @AtProtoServiceAuth() route; hostile tokens, signed here with the keys of a did:plc
 * registered on the local PLC and of a did:web served on localhost, are each refused with
 * their own code, a 401 and WWW-Authenticate (or a 503 when the issuer cannot be fetched).
 */
import { Controller, Get, Post } from '@nestjs/common';
import { request } from 'undici';
import {
  AtProtoCaller,
  AtProtoConfigError,
  AtProtoDid,
  AtProtoServiceAuth,
  AtProtoServiceAuthService,
  type AtProtoServiceCaller,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { OwnRedis } from '../support/redis-server.js';
import { AppBrowser } from './support/app-client.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { SHARED_ENCRYPTION, startServiceApp, type ServiceApp } from './support/service-app.js';
import {
  closedPort,
  P256Keypair,
  registerPlcIdentity,
  Secp256k1Keypair,
  signToken,
  startWebIdentity,
  type PlcIdentity,
  type WebIdentity,
} from './support/service-jwt.js';
import { startTestApp, type TestApp } from './support/test-app.js';

/** This service's DID: the audience the tokens must be for. */
const SERVICE = 'did:web:feed.e2e.internal';
const FEED = 'app.bsky.feed.getFeedSkeleton';
const ONCE = 'com.example.service.doOnce';
const LOOSE = 'com.example.service.anyMethod';

@Controller('xrpc')
class XrpcController {
  @AtProtoServiceAuth({ lxm: FEED })
  @Get(FEED)
  skeleton(@AtProtoCaller() caller: AtProtoServiceCaller, @AtProtoDid() user: string | undefined) {
    return { caller, user: user ?? null };
  }

  @AtProtoServiceAuth({ lxm: ONCE, singleUse: true })
  @Post(ONCE)
  once(@AtProtoCaller() caller: AtProtoServiceCaller) {
    return { caller };
  }

  @AtProtoServiceAuth({ lxm: LOOSE, allowMethodless: true })
  @Get(LOOSE)
  loose(@AtProtoCaller() caller: AtProtoServiceCaller) {
    return { caller };
  }

  @AtProtoServiceAuth({ lxm: 'route', aud: 'did:web:other.e2e.internal#svc' })
  @Get(':nsid')
  any(@AtProtoCaller() caller: AtProtoServiceCaller) {
    return { caller };
  }
}

/** A route for signed-in users: a service token is not a user credential. */
@Controller('me')
class UserController {
  @Get()
  me(@AtProtoDid() did: string) {
    return { did };
  }
}

let pds: TestPds;
let user: TestApp;
let drop: () => Promise<void>;
let olga: TestAccount;
let service: ServiceApp;
let plc: PlcIdentity;
let web: WebIdentity;
let deadPort: number;
const seen = new Set<string>();

interface Answer {
  status: number;
  body: { error?: string; message?: string; caller?: AtProtoServiceCaller; user?: unknown };
  wwwAuthenticate: string | undefined;
}

async function call(
  app: { url: string },
  path: string,
  authorization: string | undefined,
  method: 'GET' | 'POST' = 'GET',
): Promise<Answer> {
  const res = await request(`${app.url}${path}`, {
    method,
    headers: authorization === undefined ? {} : { authorization },
  });
  const text = await res.body.text();
  const header = res.headers['www-authenticate'];
  return {
    status: res.statusCode,
    body: text ? (JSON.parse(text) as Answer['body']) : {},
    wwwAuthenticate: Array.isArray(header) ? header[0] : header,
  };
}

/** Sends `token` and expects it refused with `error` (a 401 with WWW-Authenticate). */
async function refused(
  token: string,
  error: string,
  path = `/xrpc/${FEED}`,
  method: 'GET' | 'POST' = 'GET',
): Promise<Answer> {
  seen.add(token);
  const answer = await call(service, path, `Bearer ${token}`, method);
  expect({ status: answer.status, error: answer.body.error }).toEqual({ status: 401, error });
  expect(answer.wwwAuthenticate).toBe('Bearer error="invalid_token"');
  return answer;
}

async function accepted(token: string, path = `/xrpc/${FEED}`, method: 'GET' | 'POST' = 'GET') {
  seen.add(token);
  const answer = await call(service, path, `Bearer ${token}`, method);
  expect({ status: answer.status, error: answer.body.error }).toEqual({
    status: method === 'POST' ? 201 : 200,
    error: undefined,
  });
  return answer.body;
}

async function pdsToken(lxm: string | null, aud = SERVICE): Promise<string> {
  const token = await user.app.get(AtProtoServiceAuthService).getToken(olga.did, { aud, lxm });
  seen.add(token);
  return token;
}

const now = () => Math.floor(Date.now() / 1000);

beforeAll(async () => {
  pds = await startTestPds();
  const db = await createTestDatabase('sqlite', 'e2e_service_auth_inbound');
  drop = db.drop;
  user = await startTestApp(pds, db.options, { encryption: SHARED_ENCRYPTION });
  olga = await pds.createAccount('olga.test');
  expect((await new AppBrowser(user.url).login(olga)).status).toBe(302);
  plc = await registerPlcIdentity(pds.plcUrl, 'mallory.test');
  web = await startWebIdentity();
  deadPort = await closedPort();
  service = await startServiceApp([XrpcController, UserController], {
    serviceAuth: { serviceDid: SERVICE },
    plcDirectoryUrl: pds.plcUrl,
    allowHttpServers: true,
    // The local PLC and the did:web host, through the guarded fetch's allow-list; nothing else.
    dangerouslyAllowPrivateHosts: [new URL(pds.plcUrl).host, web.host, `localhost:${deadPort}`],
  });
});
afterAll(async () => {
  // No token, whole or in part, in either app's logs.
  for (const logs of [service?.logs ?? [], user?.logs ?? []]) {
    const text = logs.join('\n');
    for (const token of seen) {
      expect(text).not.toContain(token);
      const signature = token.split('.')[2] ?? '';
      if (signature.length > 16) expect(text).not.toContain(signature);
    }
  }
  await service?.close();
  await user?.close();
  await drop?.();
  await pds?.stop();
  web?.server.close();
  web?.server.closeAllConnections();
});

describe('a token minted by the PDS', () => {
  it('is accepted: the caller is the user, and no user is signed in', async () => {
    const body = await accepted(await pdsToken(FEED));
    expect(body.caller).toEqual({ did: olga.did, aud: SERVICE, lxm: FEED });
    expect(body.user).toBeNull();
  });

  it('for a #service of this DID is accepted (a bare serviceDid covers its services)', async () => {
    const body = await accepted(await pdsToken(FEED, `${SERVICE}#bsky_fg`));
    expect(body.caller?.aud).toBe(`${SERVICE}#bsky_fg`);
  });

  it('for another audience is refused with BadJwtAudience', async () => {
    await refused(await pdsToken(FEED, 'did:web:elsewhere.e2e.internal'), 'BadJwtAudience');
  });

  it('for another method is refused with BadJwtLexiconMethod', async () => {
    await refused(await pdsToken('app.bsky.feed.getFeed'), 'BadJwtLexiconMethod');
  });

  it('without a method is refused unless the route allows method-less tokens', async () => {
    const methodless = await pdsToken(null);
    await refused(methodless, 'BadJwtLexiconMethod');
    const body = await accepted(methodless, `/xrpc/${LOOSE}`);
    expect(body.caller).toEqual({ did: olga.did, aud: SERVICE, lxm: null });
  });

  it("with lxm: 'route', is for the method the path names, and the route's own aud", async () => {
    const aud = 'did:web:other.e2e.internal#svc';
    const token = await pdsToken('com.example.ping', aud);
    expect((await accepted(token, '/xrpc/com.example.ping')).caller?.lxm).toBe('com.example.ping');
    await refused(token, 'BadJwtLexiconMethod', '/xrpc/com.example.pong');
    // The route's aud replaces the module's serviceDid.
    await refused(await pdsToken('com.example.ping'), 'BadJwtAudience', '/xrpc/com.example.ping');
  });

  it('is not a user credential: a user route answers 401', async () => {
    const res = await call(service, '/me', `Bearer ${await pdsToken(FEED)}`);
    expect(res.status).toBe(401);
  });
});

describe('hostile tokens', () => {
  const claims = (over: Record<string, unknown> = {}) => ({
    iss: plc.did,
    aud: SERVICE,
    lxm: FEED,
    ...over,
  });

  it('a token signed with the did:plc key is accepted (the baseline of this block)', async () => {
    expect((await accepted(await signToken(plc.key, claims()))).caller?.did).toBe(plc.did);
  });

  it('expired: JwtExpired', async () => {
    await refused(
      await signToken(plc.key, claims({ iat: now() - 120, exp: now() - 60 })),
      'JwtExpired',
    );
  });

  it('exp further ahead than maxAge (1 h): BadJwtExpiration', async () => {
    await refused(await signToken(plc.key, claims({ exp: now() + 2 * 3600 })), 'BadJwtExpiration');
  });

  it('a method-less token for more than 60 s: BadJwtExpiration', async () => {
    const token = await signToken(plc.key, claims({ exp: now() + 600 }), { omit: ['lxm'] });
    await refused(token, 'BadJwtExpiration', `/xrpc/${LOOSE}`);
  });

  it('iat in the future: BadJwtIssuedAt', async () => {
    await refused(await signToken(plc.key, claims({ iat: now() + 120 })), 'BadJwtIssuedAt');
  });

  it('no lxm: BadJwtLexiconMethod', async () => {
    await refused(await signToken(plc.key, claims(), { omit: ['lxm'] }), 'BadJwtLexiconMethod');
  });

  it('signed by another key: BadJwtSignature', async () => {
    await refused(await signToken(await Secp256k1Keypair.create(), claims()), 'BadJwtSignature');
  });

  it('a did:key issuer (it would vouch for itself): BadJwtIssuer', async () => {
    const key = await Secp256k1Keypair.create();
    await refused(await signToken(key, claims({ iss: key.did() })), 'BadJwtIssuer');
  });

  it('an unknown did:plc: BadJwtIssuer', async () => {
    await refused(
      await signToken(plc.key, claims({ iss: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' })),
      'BadJwtIssuer',
    );
  });

  it('alg none: refused', async () => {
    await refused(
      await signToken(plc.key, claims(), { header: { alg: 'none' } }),
      'BadJwtAlgorithm',
    );
    // Unsigned, as alg none is sent: not even a JWT here.
    const [head, body] = (await signToken(plc.key, claims(), { header: { alg: 'none' } })).split(
      '.',
    );
    await refused(`${head}.${body}.`, 'BadJwt');
  });

  it('a user token type (at+jwt, dpop+jwt, refresh+jwt): BadJwtType', async () => {
    for (const typ of ['at+jwt', 'dpop+jwt', 'refresh+jwt']) {
      await refused(await signToken(plc.key, claims(), { header: { typ } }), 'BadJwtType');
    }
  });

  it('oversized, garbage, unreadable JSON: BadJwt', async () => {
    const big = await signToken(plc.key, claims({ pad: 'x'.repeat(5000) }));
    await refused(big, 'BadJwt');
    await refused('not-a-jwt', 'BadJwt');
    await refused('a.b.c', 'BadJwt');
    const text = (s: string) => Buffer.from(s).toString('base64url');
    await refused(`${text('{"alg":"ES256K"')}.${text('{}')}.${text('sig')}`, 'BadJwt');
    await refused(`${text('{"alg":"ES256K"}')}.${text('[1]')}.${text('sig')}`, 'BadJwt');
    await refused(await signToken(plc.key, claims({ exp: 'soon' })), 'BadJwt');
  });

  it('no Authorization header: 401 AuthMissing, WWW-Authenticate: Bearer', async () => {
    const res = await call(service, `/xrpc/${FEED}`, undefined);
    expect({ status: res.status, error: res.body.error }).toEqual({
      status: 401,
      error: 'AuthMissing',
    });
    expect(res.wwwAuthenticate).toBe('Bearer');
    expect((await call(service, `/xrpc/${FEED}`, 'Basic dXNlcjpwdw==')).body.error).toBe(
      'AuthMissing',
    );
  });
});

describe('issuers', () => {
  it('a did:web (ES256) is resolved through the allow-list, and cached', async () => {
    const before = web.requests;
    const body = await accepted(
      await signToken(web.key, { iss: web.did, aud: SERVICE, lxm: FEED }),
    );
    expect(body.caller).toEqual({ did: web.did, aud: SERVICE, lxm: FEED });
    await accepted(await signToken(web.key, { iss: web.did, aud: SERVICE, lxm: FEED }));
    expect(web.requests - before).toBeLessThanOrEqual(1);
  });

  it('a labeler (iss did#atproto_labeler) signs with #atproto_label, not #atproto', async () => {
    const iss = `${web.did}#atproto_labeler`;
    const body = await accepted(await signToken(web.labelKey, { iss, aud: SERVICE, lxm: FEED }));
    expect(body.caller).toEqual({
      did: web.did,
      serviceId: 'atproto_labeler',
      aud: SERVICE,
      lxm: FEED,
    });
    await refused(await signToken(web.key, { iss, aud: SERVICE, lxm: FEED }), 'BadJwtSignature');
    // Anyone else uses #atproto: the label key does not sign for the DID itself.
    await refused(
      await signToken(web.labelKey, { iss: web.did, aud: SERVICE, lxm: FEED }),
      'BadJwtSignature',
    );
  });

  it('a did:web on a private address not in the allow-list is not fetched: BadJwtIssuer', async () => {
    const stranger = await startWebIdentity();
    try {
      // 127.0.0.1 (an IP host) and localhost on a port that is not listed.
      const port = stranger.host.split(':')[1] as string;
      for (const iss of [`did:web:127.0.0.1%3A${port}`, stranger.did]) {
        await refused(
          await signToken(stranger.key, { iss, aud: SERVICE, lxm: FEED }),
          'BadJwtIssuer',
        );
      }
      expect(stranger.requests).toBe(0);
    } finally {
      stranger.server.close();
      stranger.server.closeAllConnections();
    }
  });

  it('an issuer that does not resolve is refused for a while without fetching again', async () => {
    const gone = await startWebIdentity();
    gone.missing = true;
    try {
      // A listed host for this test only: the service app's allow-list is fixed at boot, so
      // it gets an app of its own.
      const app = await startServiceApp([XrpcController], {
        serviceAuth: { serviceDid: SERVICE },
        allowHttpServers: true,
        dangerouslyAllowPrivateHosts: [gone.host],
      });
      try {
        for (let i = 0; i < 5; i++) {
          const token = await signToken(gone.key, { iss: gone.did, aud: SERVICE, lxm: FEED });
          seen.add(token);
          const res = await call(app, `/xrpc/${FEED}`, `Bearer ${token}`);
          expect({ status: res.status, error: res.body.error }).toEqual({
            status: 401,
            error: 'BadJwtIssuer',
          });
        }
        expect(gone.requests).toBe(1);
      } finally {
        await app.close();
      }
    } finally {
      gone.server.close();
      gone.server.closeAllConnections();
    }
  });

  it('a did:plc without a key in its document: BadJwtIssuer', async () => {
    const keyless = await registerPlcIdentity(pds.plcUrl, 'keyless.test');
    await keyless.removeKeys();
    await refused(
      await signToken(keyless.key, { iss: keyless.did, aud: SERVICE, lxm: FEED }),
      'BadJwtIssuer',
    );
  });

  it('an issuer whose document cannot be fetched right now: 503 IssuerUnavailable', async () => {
    const key = await P256Keypair.create();
    const token = await signToken(key, {
      iss: `did:web:localhost%3A${deadPort}`,
      aud: SERVICE,
      lxm: FEED,
    });
    seen.add(token);
    const res = await call(service, `/xrpc/${FEED}`, `Bearer ${token}`);
    expect({ status: res.status, error: res.body.error }).toEqual({
      status: 503,
      error: 'IssuerUnavailable',
    });
  });

  it('a rotated did:plc key: the first request with the new key succeeds (re-resolved)', async () => {
    const rotating = await registerPlcIdentity(pds.plcUrl, 'rotating.test');
    const old = rotating.key;
    const claims = { iss: rotating.did, aud: SERVICE, lxm: FEED };
    await accepted(await signToken(old, claims)); // its document is now cached
    await rotating.rotate(await Secp256k1Keypair.create());
    await accepted(await signToken(rotating.key, claims));
    await refused(await signToken(old, claims), 'BadJwtSignature');
  });
});

describe('single-use routes', () => {
  it('accept a token once: JwtReplayed the second time', async () => {
    const token = await signToken(plc.key, { iss: plc.did, aud: SERVICE, lxm: ONCE });
    await accepted(token, `/xrpc/${ONCE}`, 'POST');
    await refused(token, 'JwtReplayed', `/xrpc/${ONCE}`, 'POST');
  });

  it('refuse a token without jti: BadJwt', async () => {
    const token = await signToken(
      plc.key,
      { iss: plc.did, aud: SERVICE, lxm: ONCE },
      { omit: ['jti'] },
    );
    await refused(token, 'BadJwt', `/xrpc/${ONCE}`, 'POST');
  });

  it('refuse a token already seen by another instance, through Redis', async () => {
    const prefix = `e2e-inbound-${process.pid}-${Date.now()}:`;
    const options = {
      serviceAuth: { serviceDid: SERVICE },
      plcDirectoryUrl: pds.plcUrl,
      allowHttpServers: true,
      dangerouslyAllowPrivateHosts: [new URL(pds.plcUrl).host],
      redis: 'redis://127.0.0.1:6379',
      redisKeyPrefix: prefix,
    };
    const a = await startServiceApp([XrpcController], options);
    const b = await startServiceApp([XrpcController], options);
    try {
      const token = await signToken(plc.key, { iss: plc.did, aud: SERVICE, lxm: ONCE });
      seen.add(token);
      const first = await call(a, `/xrpc/${ONCE}`, `Bearer ${token}`, 'POST');
      expect(first.status).toBe(201);
      const second = await call(b, `/xrpc/${ONCE}`, `Bearer ${token}`, 'POST');
      expect({ status: second.status, error: second.body.error }).toEqual({
        status: 401,
        error: 'JwtReplayed',
      });
      // A token that is not single-use on a reusable route stays reusable on both.
      const reusable = await signToken(plc.key, { iss: plc.did, aud: SERVICE, lxm: FEED });
      seen.add(reusable);
      expect((await call(a, `/xrpc/${FEED}`, `Bearer ${reusable}`)).status).toBe(200);
      expect((await call(b, `/xrpc/${FEED}`, `Bearer ${reusable}`)).status).toBe(200);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('the replay store unreachable', () => {
  it('answers 503 ReplayStoreUnavailable on single-use routes, and accepts nothing unchecked', async () => {
    const own = await OwnRedis.start();
    const app = await startServiceApp([XrpcController], {
      serviceAuth: { serviceDid: SERVICE },
      plcDirectoryUrl: pds.plcUrl,
      allowHttpServers: true,
      dangerouslyAllowPrivateHosts: [new URL(pds.plcUrl).host],
      redis: own.url,
    });
    try {
      await own.stop();
      const token = await signToken(plc.key, { iss: plc.did, aud: SERVICE, lxm: ONCE });
      seen.add(token);
      const down = await call(app, `/xrpc/${ONCE}`, `Bearer ${token}`, 'POST');
      expect({ status: down.status, error: down.body.error }).toEqual({
        status: 503,
        error: 'ReplayStoreUnavailable',
      });
      // Routes that are not single-use do not need the store.
      const reusable = await signToken(plc.key, { iss: plc.did, aud: SERVICE, lxm: FEED });
      seen.add(reusable);
      expect((await call(app, `/xrpc/${FEED}`, `Bearer ${reusable}`)).status).toBe(200);
      // Back: the token refused for want of a check is accepted now, once.
      await own.restart();
      // The module's connection reconnects on its own schedule: 503 until it has.
      let status = 503;
      for (let i = 0; i < 100 && status === 503; i++) {
        status = (await call(app, `/xrpc/${ONCE}`, `Bearer ${token}`, 'POST')).status;
        if (status === 503) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(status).toBe(201);
    } finally {
      await app.close();
      await own.stop();
    }
  });
});

describe('/.well-known/did.json', () => {
  it('serves the did:web document with its services at the host root, outside any prefix', async () => {
    const app = await startServiceApp(
      [XrpcController],
      {
        publicUrl: 'https://feed.e2e.internal',
        routePrefix: 'auth',
        serviceAuth: {
          serviceDid: SERVICE,
          didDocument: {
            services: [
              { id: 'bsky_fg', type: 'BskyFeedGenerator' },
              {
                id: 'atproto_labeler',
                type: 'AtprotoLabeler',
                endpoint: 'https://labels.e2e.internal',
              },
            ],
          },
        },
      },
      (nest) => nest.setGlobalPrefix('api'),
    );
    try {
      const res = await request(`${app.url}/.well-known/did.json`);
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('application/did+json');
      const doc = (await res.body.json()) as Record<string, unknown>;
      expect(doc).toEqual({
        '@context': ['https://www.w3.org/ns/did/v1'],
        id: SERVICE,
        service: [
          {
            id: '#bsky_fg',
            type: 'BskyFeedGenerator',
            serviceEndpoint: 'https://feed.e2e.internal',
          },
          {
            id: '#atproto_labeler',
            type: 'AtprotoLabeler',
            serviceEndpoint: 'https://labels.e2e.internal',
          },
        ],
      });
      // What @atproto/identity accepts as a DID document, and no key: this app signs nothing.
      const { didDocument } = await import('@atproto/identity');
      expect(didDocument.safeParse(doc).success).toBe(true);
      expect(doc).not.toHaveProperty('verificationMethod');
      // The app's own routes still take the global prefix.
      expect((await call(app, `/api/xrpc/${FEED}`, undefined)).body.error).toBe('AuthMissing');
    } finally {
      await app.close();
    }
  });

  it('is not served unless asked for, and must be for did:web:<publicUrl host>', async () => {
    expect((await request(`${service.url}/.well-known/did.json`)).statusCode).toBe(404);
    const error = await startServiceApp([], {
      publicUrl: 'https://api.e2e.internal',
      serviceAuth: {
        serviceDid: SERVICE,
        didDocument: { services: [{ id: 'bsky_fg', type: 'BskyFeedGenerator' }] },
      },
    }).then(
      async (app) => {
        await app.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoConfigError);
    expect((error as Error).message).toContain('for did:web:api.e2e.internal');
  });
});

describe('boot', () => {
  it('fails when a route uses @AtProtoServiceAuth() and no serviceDid is configured', async () => {
    const error = await startServiceApp([XrpcController], {}).then(
      async (app) => {
        await app.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoConfigError);
    expect(String((error as Error).message)).toContain('serviceAuth.serviceDid');
    expect(String((error as Error).message)).toContain('XrpcController.skeleton');
  });

  it('refuses bad route options where the decorator is written', () => {
    expect(() => AtProtoServiceAuth({ lxm: 'not an nsid' })).toThrow(/lxm must be an NSID/);
    expect(() => AtProtoServiceAuth({ lxm: FEED, aud: 'feed.example.com' })).toThrow(
      /aud must be a DID/,
    );
  });
});
