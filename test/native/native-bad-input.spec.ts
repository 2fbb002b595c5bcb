/**
 * Every bad input of native apps' token endpoint and bearer tokens, on each database: a
 * clean AtProtoTokenError (RFC 6749 §5.2 code, no secret in its text) or `undefined` from
 * verifyAccessToken, and no row changed.
 */
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import type { DataSource } from 'typeorm';
import { AtProtoTokenError } from '../../lib/native/native-token.error.js';
import { DIALECTS } from '../support/databases.js';
import { twoInstancesOn } from './support/data-sources.js';
import {
  claimsOf,
  nativeInstance,
  nativeOptions,
  PUBLIC_URL,
  signIn,
  tokenPair,
  type NativeInstance,
} from './support/native-world.js';
import type { ResolvedAtProtoOptions } from 'nestjs-atproto-auth';

const TABLES = ['atproto_native_code', 'atproto_native_refresh_family', 'atproto_app_session'];

/** Every row of the tables a native request may touch, in a stable order. */
async function snapshot(ds: DataSource): Promise<string> {
  const parts: unknown[] = [];
  for (const table of TABLES) {
    const q = ds.driver.escape.bind(ds.driver);
    parts.push(await ds.query(`SELECT * FROM ${q(table)} ORDER BY ${q('id')}`));
  }
  return JSON.stringify(parts);
}

/** A compact JWS from a header and claims, signed with `secret` (or unsigned for alg none). */
async function forge(
  header: Record<string, unknown>,
  claims: Record<string, unknown>,
  secret?: Uint8Array,
): Promise<string> {
  if (header.alg === 'none') {
    const part = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    return `${part(header)}.${part(claims)}.`;
  }
  return new SignJWT(claims)
    .setProtectedHeader(header as { alg: string })
    .sign(secret ?? randomBytes(32));
}

describe.each(DIALECTS)('native bad input on %s', (dialect) => {
  let close: () => Promise<void>;
  let ds: DataSource;
  let options: ResolvedAtProtoOptions;
  let secret: Uint8Array;
  let kid: string;
  let world: NativeInstance;

  beforeAll(async () => {
    const dbs = await twoInstancesOn(dialect, 'native_bad_input');
    close = dbs.close;
    ds = dbs.first;
    ({ options, secret, kid } = await nativeOptions({ storage: 'typeorm' }));
    world = nativeInstance(options, ds);
  });
  afterAll(async () => {
    await close?.();
  });

  /** Runs `request`, expects `oauthError`, and checks that no row changed and no secret shows. */
  async function refused(
    request: () => Promise<unknown>,
    oauthError: string,
    secrets: string[] = [],
  ): Promise<AtProtoTokenError> {
    const before = await snapshot(ds);
    const error = await request().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoTokenError);
    const e = error as AtProtoTokenError;
    expect(e.code).toBe('ERR_AT_PROTO_TOKEN');
    expect(e.oauthError).toBe(oauthError);
    expect(e.status).toBe(400);
    const text = `${e.message}\n${JSON.stringify(e.toJSON())}\n${e.stack}`;
    for (const s of secrets) expect(text).not.toContain(s);
    expect(await snapshot(ds)).toBe(before);
    return e;
  }

  it('refuses bad grant types and malformed bodies (invalid_request, unsupported_grant_type)', async () => {
    await refused(() => world.service.token({}), 'invalid_request');
    await refused(() => world.service.token({ grant_type: 'password' }), 'unsupported_grant_type');
    await refused(
      () => world.service.token({ grant_type: 'client_credentials' }),
      'unsupported_grant_type',
    );
    await refused(
      () => world.service.token({ grant_type: ['refresh_token', 'refresh_token'] }),
      'invalid_request',
    );
    await refused(() => world.service.token({ grant_type: { a: 1 } }), 'invalid_request');
  });

  it('refuses every bad code exchange without changing a row, and the code still works after them', async () => {
    const login = await signIn(world, options, undefined, 'http://127.0.0.1:5000/callback');
    const good = {
      grant_type: 'authorization_code',
      code: login.code,
      code_verifier: login.verifier,
      redirect_uri: login.redirectUri,
    };
    const secrets = [login.code, login.verifier];
    await refused(
      () => world.service.token({ ...good, code: undefined }),
      'invalid_request',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, code_verifier: undefined }),
      'invalid_request',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, code_verifier: '' }),
      'invalid_request',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, code_verifier: 'too-short' }),
      'invalid_request',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, redirect_uri: undefined }),
      'invalid_request',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, code_verifier: randomBytes(32).toString('base64url') }),
      'invalid_grant',
      secrets,
    );
    // The verifier of the code, in another case: byte for byte.
    await refused(
      () => world.service.token({ ...good, code_verifier: swapCase(login.verifier) }),
      'invalid_grant',
      secrets,
    );
    // Allowed redirect URIs, but not the one the login named (another port, another entry).
    await refused(
      () => world.service.token({ ...good, redirect_uri: 'http://127.0.0.1:5001/callback' }),
      'invalid_grant',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, redirect_uri: 'com.example.app:/oauth/callback' }),
      'invalid_grant',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, redirect_uri: 'http://localhost:5000/callback' }),
      'invalid_grant',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, redirect_uri: 'https://evil.example/callback' }),
      'invalid_grant',
      secrets,
    );
    await refused(() => world.service.token({ ...good, code: 'short' }), 'invalid_grant', secrets);
    await refused(
      () => world.service.token({ ...good, code: randomBytes(32).toString('base64url') }),
      'invalid_grant',
      secrets,
    );
    await refused(
      () => world.service.token({ ...good, code: swapCase(login.code) }),
      'invalid_grant',
      secrets,
    );

    const tokens = await world.service.token(good);
    expect(tokens.did).toBe(login.did);
    // Replay: refused, nothing changed (the session the first exchange opened stays).
    await refused(() => world.service.token(good), 'invalid_grant', [
      ...secrets,
      tokens.access_token,
    ]);
    expect(await world.appSessions.list(login.did)).toHaveLength(1);
  });

  it('refuses every bad refresh token (invalid_grant) without changing a row', async () => {
    const { tokens } = await tokenPair(world, options);
    const c = claimsOf(tokens.refresh_token);
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'HS256', typ: 'refresh+jwt', kid };
    const claims = { ...c };
    const bad: Array<[string, string]> = [
      ['malformed', 'abc'],
      ['three empty parts', '..'],
      ['oversized', `${tokens.refresh_token}.${'a'.repeat(5000)}`],
      ['alg none', await forge({ alg: 'none', typ: 'refresh+jwt', kid }, claims)],
      ['another secret', await forge(header, claims)],
      ['HS512 with the secret', await forge({ ...header, alg: 'HS512' }, claims, secret)],
      ['an unknown kid', await forge({ ...header, kid: 'other' }, claims, secret)],
      ['no kid', await forge({ alg: 'HS256', typ: 'refresh+jwt' }, claims, secret)],
      ['an access token', tokens.access_token],
      ['expired', await forge(header, { ...claims, iat: now - 100, exp: now - 10 }, secret)],
      ['not yet valid (nbf)', await forge(header, { ...claims, nbf: now + 60 }, secret)],
      ['issued in the future', await forge(header, { ...claims, iat: now + 60 }, secret)],
      ['another issuer', await forge(header, { ...claims, iss: 'https://evil.example' }, secret)],
      ['another audience', await forge(header, { ...claims, aud: 'https://evil.example' }, secret)],
      ['no sid', await forge(header, { ...claims, sid: undefined }, secret)],
    ];
    for (const [label, token] of bad) {
      const e = await refused(
        () => world.service.token({ grant_type: 'refresh_token', refresh_token: token }),
        'invalid_grant',
        [tokens.refresh_token, tokens.access_token],
      ).catch((error: unknown) => {
        throw new Error(`${label}: ${String(error)}`);
      });
      expect(e.oauthError).toBe('invalid_grant');
    }
    // Still alive: none of them counted as the reuse of a rotated token.
    expect(
      (
        await world.service.token({
          grant_type: 'refresh_token',
          refresh_token: tokens.refresh_token,
        })
      ).did,
    ).toBe(c.sub);
  });

  it('refuses a refresh of a revoked app session without changing a row', async () => {
    const { did, tokens } = await tokenPair(world, options);
    const [device] = await world.appSessions.list(did);
    await world.appSessions.revoke(device!.id, { did });
    await refused(
      () =>
        world.service.token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token }),
      'invalid_grant',
      [tokens.refresh_token],
    );
  });

  it('never accepts a bad bearer token (undefined, never a throw, no row read or changed)', async () => {
    const { tokens } = await tokenPair(world, options);
    const c = claimsOf(tokens.access_token);
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'HS256', typ: 'at+jwt', kid };
    const bad: Array<[string, unknown]> = [
      ['empty', ''],
      ['not a JWT', 'abc'],
      ['a number', 42],
      ['oversized', `${tokens.access_token}${'a'.repeat(5000)}`],
      ['a flipped signature', `${tokens.access_token.slice(0, -2)}AA`],
      ['alg none', await forge({ alg: 'none', typ: 'at+jwt', kid }, c)],
      ['another secret', await forge(header, c)],
      ['HS384 with the secret', await forge({ ...header, alg: 'HS384' }, c, secret)],
      ['an unknown kid', await forge({ ...header, kid: 'other' }, c, secret)],
      ['a refresh token', tokens.refresh_token],
      ['typ JWT', await forge({ ...header, typ: 'JWT' }, c, secret)],
      ['no typ', await forge({ alg: 'HS256', kid }, c, secret)],
      ['expired', await forge(header, { ...c, iat: now - 1000, exp: now - 100 }, secret)],
      ['not yet valid (nbf)', await forge(header, { ...c, nbf: now + 60 }, secret)],
      [
        'issued in the future',
        await forge(header, { ...c, iat: now + 60, exp: now + 900 }, secret),
      ],
      [
        'older than its lifetime',
        await forge(header, { ...c, iat: now - 2000, exp: now + 900 }, secret),
      ],
      ['another issuer', await forge(header, { ...c, iss: 'https://evil.example' }, secret)],
      ['another audience', await forge(header, { ...c, aud: PUBLIC_URL + '/x' }, secret)],
      ['no sid', await forge(header, { ...c, sid: undefined }, secret)],
      ['a malformed sid', await forge(header, { ...c, sid: 'abc' }, secret)],
      ['a sub that is not a DID', await forge(header, { ...c, sub: 'alice' }, secret)],
      ['no jti', await forge(header, { ...c, jti: undefined }, secret)],
      ['no exp', await forge(header, { ...c, exp: undefined }, secret)],
    ];
    const before = await snapshot(ds);
    for (const [label, token] of bad) {
      const result = await world.service.verifyAccessToken(token as string);
      expect([label, result]).toEqual([label, undefined]);
    }
    expect(world.service.verifiedTokenCacheSize).toBe(0);
    expect(await snapshot(ds)).toBe(before);
    expect(await world.service.verifyAccessToken(tokens.access_token)).toBeDefined();
  });
});

function swapCase(value: string): string {
  return [...value]
    .map((c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase()))
    .join('');
}
