/**
 * The verified-token cache of inbound service auth: a token whose signature has been
 * verified is not verified again when sent again (no signature check, no lookup of its
 * issuer's key), while every rule that can differ per request or route still runs on it.
 *
 * Over HTTP, through @AtProtoServiceAuth() routes, with tokens signed here by the key of a
 * did:web served on localhost (the e2e support code). That a token was verified is counted
 * on the real IssuerKeyResolver (every signature check asks it for the issuer's key): a spy
 * that calls through, nothing replaced.
 */
import { jest } from '@jest/globals';
import { Controller, Get, Post } from '@nestjs/common';
import { request } from 'undici';
import {
  AtProtoCaller,
  AtProtoServiceAuth,
  AtProtoServiceJwtVerifier,
  type AtProtoServiceCaller,
} from 'nestjs-atproto-auth';
import { IssuerKeyResolver } from '../../lib/service-auth/issuer-key-resolver.js';
import {
  type VerifiedClaims,
  VerifiedTokenCache,
} from '../../lib/service-auth/verified-token-cache.js';
import { startServiceApp, type ServiceApp } from '../e2e/support/service-app.js';
import {
  P256Keypair,
  signToken,
  startWebIdentity,
  type TestClaims,
  type WebIdentity,
} from '../e2e/support/service-jwt.js';

describe('VerifiedTokenCache', () => {
  let now = 1_000_000_000_000;
  const clock = () => now;
  const claims = (over: Partial<VerifiedClaims> = {}): VerifiedClaims => ({
    iss: 'did:web:caller.example',
    did: 'did:web:caller.example',
    serviceId: undefined,
    aud: 'did:web:api.example',
    lxm: 'app.bsky.feed.getFeedSkeleton',
    exp: now / 1000 + 60,
    iat: now / 1000,
    jti: 'j',
    ...over,
  });

  it('holds at most maxEntries, the least recently used dropped first', () => {
    const cache = new VerifiedTokenCache(3, clock);
    for (const key of ['a', 'b', 'c']) cache.set(key, claims({ jti: key }));
    expect(cache.get('a')?.jti).toBe('a'); // a is now the most recently used
    cache.set('d', claims({ jti: 'd' }));
    expect(cache.stats().entries).toBe(3);
    expect(cache.get('b')).toBeUndefined();
    for (const key of ['a', 'c', 'd']) expect(cache.get(key)?.jti).toBe(key);
    // Setting a key again refreshes it rather than adding one.
    cache.set('c', claims({ jti: 'c' }));
    cache.set('e', claims({ jti: 'e' }));
    expect(cache.get('a')).toBeUndefined();
    expect(cache.stats()).toEqual({ entries: 3, hits: 4, misses: 2 });
  });

  it("keeps an entry until the token's exp, never after; dropped when read after it", () => {
    const cache = new VerifiedTokenCache(10, clock);
    cache.set('t', claims({ exp: now / 1000 + 30 }));
    now += 30_000;
    expect(cache.get('t')).toBeDefined(); // exactly at exp: not yet expired (now / 1000 > exp)
    now += 1;
    expect(cache.get('t')).toBeUndefined();
    expect(cache.stats()).toEqual({ entries: 0, hits: 1, misses: 1 });
    // An already expired token is not added.
    cache.set('old', claims({ exp: now / 1000 - 1 }));
    expect(cache.stats().entries).toBe(0);
  });

  it('0 entries: off, nothing is held', () => {
    const cache = new VerifiedTokenCache(0, clock);
    expect(cache.enabled).toBe(false);
    cache.set('t', claims());
    expect(cache.get('t')).toBeUndefined();
    expect(cache.stats().entries).toBe(0);
  });

  it('keys a token by the SHA-256 of its exact string, never the token itself', () => {
    const token = 'eyJhbGciOiJFUzI1NksifQ.eyJpc3MiOiJkaWQ6d2ViOmEifQ.c2lnbmF0dXJl';
    const key = VerifiedTokenCache.keyOf(token);
    expect(key).toMatch(/^[A-Za-z0-9_-]{43}$/);
    for (const part of token.split('.')) expect(key).not.toContain(part);
    expect(VerifiedTokenCache.keyOf(`${token.slice(0, -1)}x`)).not.toBe(key);
  });
});

const SERVICE = 'did:web:feed.cache.internal';
const ELSEWHERE = 'did:web:elsewhere.cache.internal';
const FEED = 'app.bsky.feed.getFeedSkeleton';
const OTHER = 'com.example.cache.other';
const ONCE = 'com.example.cache.doOnce';
const LOOSE = 'com.example.cache.anyMethod';

@Controller('xrpc')
class CacheController {
  @AtProtoServiceAuth({ lxm: FEED })
  @Get(FEED)
  feed(@AtProtoCaller() caller: AtProtoServiceCaller) {
    return { caller };
  }

  @AtProtoServiceAuth({ lxm: OTHER })
  @Get(OTHER)
  other(@AtProtoCaller() caller: AtProtoServiceCaller) {
    return { caller };
  }

  /** The same method as the single-use route, reusable. */
  @AtProtoServiceAuth({ lxm: ONCE })
  @Get(ONCE)
  reusable(@AtProtoCaller() caller: AtProtoServiceCaller) {
    return { caller };
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
}

/** The same method as CacheController's FEED route, for another audience. */
@Controller('elsewhere/xrpc')
class ElsewhereController {
  @AtProtoServiceAuth({ lxm: FEED, aud: ELSEWHERE })
  @Get(FEED)
  feed(@AtProtoCaller() caller: AtProtoServiceCaller) {
    return { caller };
  }
}

let web: WebIdentity;
let app: ServiceApp;
let small: ServiceApp;
let off: ServiceApp;
const seen = new Set<string>();
const keyLookups = jest.spyOn(IssuerKeyResolver.prototype, 'key');

/** Signature checks so far, in any app: each asks the resolver for the issuer's key. */
const verifications = () => keyLookups.mock.calls.length;

async function call(
  on: ServiceApp,
  path: string,
  token: string,
  method: 'GET' | 'POST' = 'GET',
): Promise<{ status: number; error?: string; caller?: AtProtoServiceCaller }> {
  seen.add(token);
  const res = await request(`${on.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}` },
  });
  const body = (await res.body.json()) as { error?: string; caller?: AtProtoServiceCaller };
  return { status: res.statusCode, error: body.error, caller: body.caller };
}

/** `call`, and how many signature checks it made. */
async function counted(on: ServiceApp, path: string, token: string, method?: 'GET' | 'POST') {
  const before = verifications();
  const answer = await call(on, path, token, method);
  return { ...answer, verified: verifications() - before };
}

const token = (over: Partial<TestClaims> = {}, options?: Parameters<typeof signToken>[2]) =>
  signToken(web.key, { iss: web.did, aud: SERVICE, lxm: FEED, ...over }, options);
const statsOf = (on: ServiceApp) => on.app.get(AtProtoServiceJwtVerifier).stats();

beforeAll(async () => {
  web = await startWebIdentity();
  const boot = (verifiedCacheMaxEntries?: number) =>
    startServiceApp([CacheController, ElsewhereController], {
      serviceAuth: {
        serviceDid: SERVICE,
        ...(verifiedCacheMaxEntries === undefined ? {} : { verifiedCacheMaxEntries }),
      },
      allowHttpServers: true,
      dangerouslyAllowPrivateHosts: [web.host],
    });
  app = await boot();
  small = await boot(2);
  off = await boot(0);
});

afterAll(async () => {
  // No token, whole or its signature, in any log.
  for (const logs of [app?.logs ?? [], small?.logs ?? [], off?.logs ?? []]) {
    const text = logs.join('\n');
    for (const t of seen) {
      expect(text).not.toContain(t);
      expect(text).not.toContain(t.split('.')[2]);
    }
  }
  await app?.close();
  await small?.close();
  await off?.close();
  web?.server.close();
  web?.server.closeAllConnections();
  keyLookups.mockRestore();
});

describe('a token sent again', () => {
  it('is accepted without a second signature check or key lookup', async () => {
    const t = await token();
    const before = statsOf(app);
    const first = await counted(app, `/xrpc/${FEED}`, t);
    expect(first).toMatchObject({ status: 200, verified: 1 });
    expect(first.caller).toEqual({ did: web.did, aud: SERVICE, lxm: FEED });
    for (let i = 0; i < 3; i++) {
      const again = await counted(app, `/xrpc/${FEED}`, t);
      expect(again).toMatchObject({ status: 200, verified: 0 });
      expect(again.caller).toEqual(first.caller);
    }
    const after = statsOf(app);
    expect(after.hits - before.hits).toBe(3);
    expect(after.misses - before.misses).toBe(1);
    expect(after.entries).toBe(before.entries + 1);
    // Another token of the same issuer is verified in full.
    expect(await counted(app, `/xrpc/${FEED}`, await token())).toMatchObject({
      status: 200,
      verified: 1,
    });
  });

  it('is not remembered when it was refused: a bad signature is checked every time', async () => {
    const forged = await signToken(await P256Keypair.create(), {
      iss: web.did,
      aud: SERVICE,
      lxm: FEED,
    });
    const entries = statsOf(app).entries;
    for (let i = 0; i < 2; i++) {
      const answer = await counted(app, `/xrpc/${FEED}`, forged);
      expect(answer).toMatchObject({ status: 401, error: 'BadJwtSignature' });
      expect(answer.verified).toBeGreaterThan(0);
    }
    expect(statsOf(app).entries).toBe(entries);
  });

  it('refused by a route it is not for (unverified), is verified on one it is for', async () => {
    const t = await token();
    expect(await counted(app, `/elsewhere/xrpc/${FEED}`, t)).toMatchObject({
      status: 401,
      error: 'BadJwtAudience',
      verified: 0,
    });
    expect(await counted(app, `/xrpc/${FEED}`, t)).toMatchObject({ status: 200, verified: 1 });
  });

  it('after its exp is refused (JwtExpired) without being verified, and dropped', async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await token({ iat: now, exp: now + 2 });
    expect(await counted(app, `/xrpc/${FEED}`, t)).toMatchObject({ status: 200, verified: 1 });
    const entries = statsOf(app).entries;
    await new Promise((resolve) => setTimeout(resolve, (now + 2) * 1000 - Date.now() + 50));
    expect(await counted(app, `/xrpc/${FEED}`, t)).toMatchObject({
      status: 401,
      error: 'JwtExpired',
      verified: 0,
    });
    expect(statsOf(app).entries).toBe(entries - 1);
  });

  it("to another route is checked against that route's method and audience", async () => {
    const t = await token();
    expect(await counted(app, `/xrpc/${FEED}`, t)).toMatchObject({ status: 200, verified: 1 });
    expect(await counted(app, `/xrpc/${OTHER}`, t)).toMatchObject({
      status: 401,
      error: 'BadJwtLexiconMethod',
      verified: 0,
    });
    expect(await counted(app, `/elsewhere/xrpc/${FEED}`, t)).toMatchObject({
      status: 401,
      error: 'BadJwtAudience',
      verified: 0,
    });
    expect(await counted(app, `/xrpc/${FEED}`, t)).toMatchObject({ status: 200, verified: 0 });

    // A method-less token, accepted where the route allows it, and only there.
    const methodless = await token({}, { omit: ['lxm'] });
    expect(await counted(app, `/xrpc/${LOOSE}`, methodless)).toMatchObject({
      status: 200,
      verified: 1,
    });
    expect(await counted(app, `/xrpc/${FEED}`, methodless)).toMatchObject({
      status: 401,
      error: 'BadJwtLexiconMethod',
      verified: 0,
    });
  });

  it('to a single-use route is accepted once, then JwtReplayed', async () => {
    const t = await token({ lxm: ONCE });
    expect(await counted(app, `/xrpc/${ONCE}`, t)).toMatchObject({ status: 200, verified: 1 });
    // Found verified, and still claimed by its jti.
    expect(await counted(app, `/xrpc/${ONCE}`, t, 'POST')).toMatchObject({
      status: 201,
      verified: 0,
    });
    expect(await counted(app, `/xrpc/${ONCE}`, t, 'POST')).toMatchObject({
      status: 401,
      error: 'JwtReplayed',
      verified: 0,
    });
    // Single-use from its first request, remembered as verified after it: refused all the same.
    const once = await token({ lxm: ONCE });
    expect(await counted(app, `/xrpc/${ONCE}`, once, 'POST')).toMatchObject({
      status: 201,
      verified: 1,
    });
    expect(await counted(app, `/xrpc/${ONCE}`, once, 'POST')).toMatchObject({
      status: 401,
      error: 'JwtReplayed',
      verified: 0,
    });
    // A token without jti, verified on the reusable route, is refused by the single-use one.
    const anonymous = await token({ lxm: ONCE }, { omit: ['jti'] });
    expect(await counted(app, `/xrpc/${ONCE}`, anonymous)).toMatchObject({ status: 200 });
    expect(await counted(app, `/xrpc/${ONCE}`, anonymous, 'POST')).toMatchObject({
      status: 401,
      error: 'BadJwt',
      verified: 0,
    });
  });
});

describe('serviceAuth.verifiedCacheMaxEntries', () => {
  it('bounds the tokens held, the least recently used dropped first', async () => {
    const [a, b, c] = [await token(), await token(), await token()];
    const path = `/xrpc/${FEED}`;
    expect((await counted(small, path, a)).verified).toBe(1);
    expect((await counted(small, path, b)).verified).toBe(1);
    expect((await counted(small, path, a)).verified).toBe(0); // a: most recently used
    expect((await counted(small, path, c)).verified).toBe(1); // b dropped
    expect(statsOf(small).entries).toBe(2);
    expect(await counted(small, path, a)).toMatchObject({ status: 200, verified: 0 });
    expect(await counted(small, path, c)).toMatchObject({ status: 200, verified: 0 });
    expect(await counted(small, path, b)).toMatchObject({ status: 200, verified: 1 });
    expect(statsOf(small).entries).toBe(2);
  });

  it('0 turns the cache off: every request is verified', async () => {
    const t = await token();
    for (let i = 0; i < 3; i++) {
      expect(await counted(off, `/xrpc/${FEED}`, t)).toMatchObject({ status: 200, verified: 1 });
    }
    expect(statsOf(off)).toEqual({ entries: 0, hits: 0, misses: 0 });
  });
});
