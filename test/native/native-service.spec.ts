import { jest } from '@jest/globals';
import { SignJWT } from 'jose';
import { AtProtoBadRequestError } from 'nestjs-atproto-auth';
import { AtProtoTokenError } from '../../lib/native/native-token.error.js';
import {
  ACCESS_TOKEN_CACHE_MAX_ENTRIES,
  AtProtoNativeService,
  NATIVE_CODE_TTL_MS,
} from '../../lib/native/native.service.js';
import {
  claimsOf,
  CLI_REDIRECT,
  CUSTOM_REDIRECT,
  fakeDateOnly,
  headerOf,
  nativeInstance,
  nativeOptions,
  PUBLIC_URL,
  randomDid,
  signIn,
  tokenPair,
} from './support/native-world.js';
import { parseNativeLoginRequest } from '../../lib/native/native-login-request.js';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

async function tokenError(promise: Promise<unknown>): Promise<AtProtoTokenError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AtProtoTokenError);
  return error as AtProtoTokenError;
}

afterEach(() => {
  jest.useRealTimers();
});

describe('AtProtoNativeService: code, token pair, verification', () => {
  it('issues a one-time code to the redirect URI with the app state and the issuer (RFC 9207)', async () => {
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const login = await signIn(world, options);
    expect(login.url.href.startsWith(`${CUSTOM_REDIRECT}?`)).toBe(true);
    expect([...login.url.searchParams.keys()]).toEqual(['code', 'state', 'iss']);
    expect(login.code).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(login.url.searchParams.get('state')).toBe('st');
    expect(login.url.searchParams.get('iss')).toBe(PUBLIC_URL);
    const cli = await signIn(world, options, randomDid(), 'http://127.0.0.1:53682/callback');
    expect(cli.url.origin).toBe('http://127.0.0.1:53682');
    expect(cli.url.pathname).toBe('/callback');
  });

  it('exchanges the code for a token pair: HS256 JWTs with kid, typ, iss/aud, sub, sid, jti, iat, exp', async () => {
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const { did, tokens } = await tokenPair(world, options);
    expect(tokens).toEqual({
      access_token: expect.any(String),
      refresh_token: expect.any(String),
      token_type: 'Bearer',
      expires_in: 900,
      did,
    });
    expect(headerOf(tokens.access_token)).toEqual({ alg: 'HS256', typ: 'at+jwt', kid: 'n1' });
    expect(headerOf(tokens.refresh_token)).toEqual({ alg: 'HS256', typ: 'refresh+jwt', kid: 'n1' });
    const access = claimsOf(tokens.access_token);
    expect(access).toEqual({
      sid: expect.stringMatching(/^[0-9a-f]{64}$/),
      iss: PUBLIC_URL,
      aud: PUBLIC_URL,
      sub: did,
      jti: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/),
      iat: expect.any(Number),
      exp: (access.iat as number) + 900,
    });
    // One native sign-in is one device, named by the token request's User-Agent.
    const [device, ...others] = await world.appSessions.list(did);
    expect(others).toEqual([]);
    expect(device).toMatchObject({ id: access.sid, did, userAgent: 'TestApp/1.0' });
    const refresh = claimsOf(tokens.refresh_token);
    expect(refresh).toMatchObject({ sid: access.sid, sub: did, iss: PUBLIC_URL, aud: PUBLIC_URL });
    expect(refresh.exp).toBe(Math.floor(device!.expiresAt.getTime() / 1000));
    expect(refresh.jti).not.toBe(access.jti);

    expect(await world.service.verifyAccessToken(tokens.access_token)).toEqual({
      did,
      appSessionId: access.sid,
      expiresAt: new Date((access.exp as number) * 1000),
    });
  });

  it('counts a code not yet exchanged as a login under way for its DID (cleanup and logout must keep the OAuth session)', async () => {
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const did = randomDid();
    expect(await world.service.hasPendingLogin(did)).toBe(false);
    const login = await signIn(world, options, did);
    expect(await world.service.hasPendingLogin(did)).toBe(true);
    await world.service.token({
      grant_type: 'authorization_code',
      code: login.code,
      code_verifier: login.verifier,
      redirect_uri: login.redirectUri,
    });
    expect(await world.service.hasPendingLogin(did)).toBe(false);
    expect(await world.appSessions.hasActive(did)).toBe(true);
  });

  it('refuses a code after 60 seconds', async () => {
    const start = Date.now();
    fakeDateOnly(jest, start);
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const login = await signIn(world, options);
    jest.setSystemTime(start + NATIVE_CODE_TTL_MS);
    const error = await tokenError(
      world.service.token({
        grant_type: 'authorization_code',
        code: login.code,
        code_verifier: login.verifier,
        redirect_uri: login.redirectUri,
      }),
    );
    expect(error.toJSON()).toEqual({
      error: 'invalid_grant',
      error_description: expect.stringMatching(/invalid, expired or already used/),
    });
    expect(await world.appSessions.list(login.did)).toEqual([]);
  });

  it('rotates the refresh token; the new pair works and the old access token lasts until it expires', async () => {
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const { did, tokens } = await tokenPair(world, options);
    const next = await world.service.token({
      grant_type: 'refresh_token',
      refresh_token: tokens.refresh_token,
    });
    expect(next.did).toBe(did);
    expect(next.refresh_token).not.toBe(tokens.refresh_token);
    expect(claimsOf(next.refresh_token).jti).not.toBe(claimsOf(tokens.refresh_token).jti);
    expect(claimsOf(next.refresh_token).sid).toBe(claimsOf(tokens.refresh_token).sid);
    expect(await world.service.verifyAccessToken(next.access_token)).toMatchObject({ did });
    expect(await world.service.verifyAccessToken(tokens.access_token)).toMatchObject({ did });
    const third = await world.service.token({
      grant_type: 'refresh_token',
      refresh_token: next.refresh_token,
    });
    expect(third.refresh_token).not.toBe(next.refresh_token);
    expect(await world.appSessions.list(did)).toHaveLength(1);
  });

  it('accepts the token request as a form would send it, and refuses other shapes of body', async () => {
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const login = await signIn(world, options);
    const form = Object.fromEntries(
      new URLSearchParams({
        grant_type: 'authorization_code',
        code: login.code,
        code_verifier: login.verifier,
        redirect_uri: login.redirectUri,
      }),
    );
    expect((await world.service.token(form)).did).toBe(login.did);
    for (const body of [undefined, null, 'grant_type=refresh_token', [1]]) {
      expect((await tokenError(world.service.token(body))).oauthError).toBe('invalid_request');
    }
  });
});

describe('AtProtoNativeService: revocation (RFC 7009)', () => {
  it.each(['refresh_token', 'access_token', undefined])(
    'ends the app session and its refresh tokens for a valid token (hint %s)',
    async (hint) => {
      const { options } = await nativeOptions();
      const world = nativeInstance(options);
      const { did, tokens } = await tokenPair(world, options);
      const sid = claimsOf(tokens.access_token).sid as string;
      const token = hint === 'access_token' ? tokens.access_token : tokens.refresh_token;
      await world.service.revokeToken({ token, token_type_hint: hint });
      expect(await world.appSessions.validateId(sid)).toBeUndefined();
      expect(await world.appSessions.list(did)).toEqual([]);
      expect((await world.store.getFamily(sid))?.revokedAt).toBeInstanceOf(Date);
      const error = await tokenError(
        world.service.token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token }),
      );
      expect(error.oauthError).toBe('invalid_grant');
    },
  );

  it('succeeds for an unknown or invalid token, and refuses a request without one', async () => {
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const { did, tokens } = await tokenPair(world, options);
    await world.service.revokeToken({ token: 'not-a-token' });
    await world.service.revokeToken({ token: `${tokens.refresh_token}x` });
    expect(await world.appSessions.list(did)).toHaveLength(1);
    const error = await tokenError(world.service.revokeToken({ token_type_hint: 'access_token' }));
    expect(error.toJSON()).toEqual({
      error: 'invalid_request',
      error_description: 'token is required.',
    });
  });
});

describe('AtProtoNativeService: lifetimes', () => {
  it('refuses an access token once expired, even one it has cached', async () => {
    const start = Date.now();
    fakeDateOnly(jest, start);
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const { tokens } = await tokenPair(world, options);
    expect(await world.service.verifyAccessToken(tokens.access_token)).toBeDefined();
    expect(world.service.verifiedTokenCacheSize).toBe(1);
    jest.setSystemTime(start + 15 * MINUTE + 1000);
    expect(await world.service.verifyAccessToken(tokens.access_token)).toBeUndefined();
    expect(world.service.verifiedTokenCacheSize).toBe(0);
  });

  it('follows appSession.idleTtl: a refresh counts as activity, an idle session refreshes no more', async () => {
    const start = Date.now();
    fakeDateOnly(jest, start);
    const { options } = await nativeOptions({
      appSession: { idleTtl: 2 * MINUTE, absoluteTtl: DAY, cacheTtl: 0 },
    });
    const world = nativeInstance(options);
    const { tokens } = await tokenPair(world, options);
    let refresh = tokens.refresh_token;
    for (let i = 1; i <= 3; i++) {
      jest.setSystemTime(start + i * 90_000);
      refresh = (await world.service.token({ grant_type: 'refresh_token', refresh_token: refresh }))
        .refresh_token;
      await new Promise((resolve) => setImmediate(resolve)); // the activity write is not awaited
    }
    jest.setSystemTime(start + 3 * 90_000 + 2 * MINUTE + 1000);
    const error = await tokenError(
      world.service.token({ grant_type: 'refresh_token', refresh_token: refresh }),
    );
    expect(error.message).toMatch(/session of this refresh token has ended/);
  });

  it('follows appSession.absoluteTtl: no refresh token outlives its app session', async () => {
    const start = Date.now();
    fakeDateOnly(jest, start);
    const { options } = await nativeOptions({
      appSession: { idleTtl: DAY, absoluteTtl: 10 * MINUTE, cacheTtl: 0 },
    });
    const world = nativeInstance(options);
    const { tokens } = await tokenPair(world, options);
    // The access token is cut at the session's end too.
    expect(tokens.expires_in).toBe(600);
    jest.setSystemTime(start + 10 * MINUTE + 10_000);
    const error = await tokenError(
      world.service.token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token }),
    );
    expect(error.oauthError).toBe('invalid_grant');
  });

  it('ends the refresh tokens with the app session: AppSessionService.revoke kills the family', async () => {
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const { did, tokens } = await tokenPair(world, options);
    const [device] = await world.appSessions.list(did);
    await world.appSessions.revoke(device!.id, { did });
    const error = await tokenError(
      world.service.token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token }),
    );
    expect(error.message).toMatch(/session of this refresh token has ended/);
  });
});

describe('AtProtoNativeService: the verified-token cache', () => {
  it('keeps only tokens that verified, and at most 10,000 of them (oldest out first)', async () => {
    const { options, secret, kid } = await nativeOptions();
    const world = nativeInstance(options);
    const { tokens } = await tokenPair(world, options);
    await world.service.verifyAccessToken(`${tokens.access_token}x`);
    await world.service.verifyAccessToken(tokens.refresh_token);
    expect(world.service.verifiedTokenCacheSize).toBe(0);
    await world.service.verifyAccessToken(tokens.access_token);
    expect(world.service.verifiedTokenCacheSize).toBe(1);
    // More valid access tokens of this session than the cache holds.
    const claims = claimsOf(tokens.access_token);
    for (let i = 0; i < ACCESS_TOKEN_CACHE_MAX_ENTRIES + 5; i++) {
      const token = await new SignJWT({ sid: claims.sid })
        .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid })
        .setIssuer(PUBLIC_URL)
        .setAudience(PUBLIC_URL)
        .setSubject(claims.sub as string)
        .setJti(`jti-of-the-token-${i}`)
        .setIssuedAt(claims.iat as number)
        .setExpirationTime(claims.exp as number)
        .sign(secret);
      expect(await world.service.verifyAccessToken(token)).toBeDefined();
    }
    expect(world.service.verifiedTokenCacheSize).toBe(ACCESS_TOKEN_CACHE_MAX_ENTRIES);
    // The first one was evicted; it is verified again.
    expect(await world.service.verifyAccessToken(tokens.access_token)).toBeDefined();
    expect(world.service.verifiedTokenCacheSize).toBe(ACCESS_TOKEN_CACHE_MAX_ENTRIES);
  }, 120_000);
});

describe('AtProtoNativeService: the confirmation page of custom-scheme redirects', () => {
  it('names the service and the app, escapes what it shows, and has no script', async () => {
    const { options } = await nativeOptions();
    const world = nativeInstance(options);
    const login = await signIn(world, options);
    const html = world.service.confirmationPage(login.url, 'Acme <script>alert("x")</script> & Co');
    expect(html).toContain('Acme &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co');
    expect(html).toContain('<code>com.example.app</code>');
    expect(html).toContain(`<a href="${login.url.href.replaceAll('&', '&amp;')}">Open the app</a>`);
    expect(html).not.toMatch(/<script|\son\w+=/i);
    expect(html).toMatch(/one minute/);
  });
});

describe('AtProtoNativeService without the native option', () => {
  it('verifies nothing and refuses the token, revocation and code operations cleanly', async () => {
    const { options } = await nativeOptions({ native: undefined });
    const { options: other } = await nativeOptions();
    const world = nativeInstance(options);
    const service: AtProtoNativeService = world.service;
    expect(service.enabled).toBe(false);
    const { tokens } = await tokenPair(nativeInstance(other), other);
    expect(await service.verifyAccessToken(tokens.access_token)).toBeUndefined();
    expect(await service.hasPendingLogin(randomDid())).toBe(false);
    expect((await tokenError(service.token({ grant_type: 'refresh_token' }))).message).toMatch(
      /not enabled/,
    );
    expect((await tokenError(service.revokeToken({ token: 'x' }))).message).toMatch(/not enabled/);
    const request = parseNativeLoginRequest(
      {
        redirect_uri: CLI_REDIRECT,
        code_challenge: 'a'.repeat(43),
        code_challenge_method: 'S256',
      },
      other.native,
    )!;
    await expect(service.issueCode(randomDid(), request)).rejects.toBeInstanceOf(
      AtProtoBadRequestError,
    );
  });
});
