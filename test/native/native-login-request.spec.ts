import { createHash, randomBytes } from 'node:crypto';
import { AtProtoBadRequestError } from 'nestjs-atproto-auth';
import {
  fromNativeLoginAppState,
  parseNativeLoginRequest,
  toNativeLoginAppState,
} from '../../lib/native/native-login-request.js';
import {
  resolveNativeOptions,
  type ResolvedNativeOptions,
} from '../../lib/native/native-options.js';

function nativeOptions(redirectUris: string[]): ResolvedNativeOptions {
  const problems: string[] = [];
  const resolved = resolveNativeOptions(
    {
      redirectUris,
      tokenSecrets: { activeKid: 't', keys: { t: randomBytes(32).toString('base64') } },
    },
    problems,
  );
  expect(problems).toEqual([]);
  return resolved!;
}

const options = nativeOptions([
  'com.example.app:/oauth/callback',
  'https://app.example.com/native/callback',
  'http://127.0.0.1/callback',
]);
const verifier = randomBytes(32).toString('base64url');
const challenge = createHash('sha256').update(verifier).digest('base64url');
const query = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  input: 'alice.test',
  redirect_uri: 'com.example.app:/oauth/callback',
  code_challenge: challenge,
  code_challenge_method: 'S256',
  state: 'app-state-1',
  ...extra,
});

function refusal(q: Record<string, unknown>, ...opts: [ResolvedNativeOptions | undefined] | []) {
  try {
    parseNativeLoginRequest(q, opts.length === 0 ? options : opts[0]);
  } catch (error) {
    expect(error).toBeInstanceOf(AtProtoBadRequestError);
    return (error as AtProtoBadRequestError).message;
  }
  throw new Error('expected AtProtoBadRequestError');
}

describe('parseNativeLoginRequest', () => {
  it('is undefined for a browser login (no redirect_uri), whatever native options say', () => {
    expect(
      parseNativeLoginRequest({ input: 'alice.test', returnTo: '/me' }, options),
    ).toBeUndefined();
    expect(parseNativeLoginRequest({ input: 'alice.test' }, undefined)).toBeUndefined();
  });

  it('reads a native login: redirect URI, S256 challenge, app state; custom schemes need the confirmation page', () => {
    expect(parseNativeLoginRequest(query(), options)).toEqual({
      redirectUri: 'com.example.app:/oauth/callback',
      codeChallenge: challenge,
      state: 'app-state-1',
      needsConfirmation: true,
    });
    expect(
      parseNativeLoginRequest(
        query({ redirect_uri: 'http://127.0.0.1:53682/callback', state: undefined }),
        options,
      ),
    ).toEqual({
      redirectUri: 'http://127.0.0.1:53682/callback',
      codeChallenge: challenge,
      state: undefined,
      needsConfirmation: false,
    });
    expect(
      parseNativeLoginRequest(
        query({ redirect_uri: 'https://app.example.com/native/callback' }),
        options,
      )?.needsConfirmation,
    ).toBe(false);
  });

  it('takes an empty state as no state, and a state of 512 printable characters (spaces included)', () => {
    expect(parseNativeLoginRequest(query({ state: '' }), options)?.state).toBeUndefined();
    const long = `a b~${'x'.repeat(508)}`;
    expect(parseNativeLoginRequest(query({ state: long }), options)?.state).toBe(long);
  });

  it.each([
    ['native apps not enabled', query(), undefined, /native apps are not enabled/],
    [
      'returnTo with redirect_uri',
      query({ returnTo: '/me' }),
      options,
      /returnTo and redirect_uri cannot be used together/,
    ],
    [
      'a redirect URI not on the allow-list',
      query({ redirect_uri: 'com.example.evil:/oauth/callback' }),
      options,
      /redirect_uri is not one this server allows/,
    ],
    [
      'a redirect URI that differs by a trailing slash',
      query({ redirect_uri: 'https://app.example.com/native/callback/' }),
      options,
      /redirect_uri is not one this server allows/,
    ],
    [
      'localhost for a CLI',
      query({ redirect_uri: 'http://localhost:53682/callback' }),
      options,
      /uses localhost: use http:\/\/127\.0\.0\.1/,
    ],
    [
      'no code_challenge',
      query({ code_challenge: undefined }),
      options,
      /code_challenge is required/,
    ],
    [
      'a challenge of 42 characters',
      query({ code_challenge: challenge.slice(0, 42) }),
      options,
      /43 base64url characters/,
    ],
    [
      'a challenge of 44 characters',
      query({ code_challenge: `${challenge}A` }),
      options,
      /43 base64url characters/,
    ],
    [
      'a challenge in base64 (padding, +, /)',
      query({ code_challenge: `${challenge.slice(0, 41)}+/` }),
      options,
      /43 base64url characters/,
    ],
    [
      'no challenge method',
      query({ code_challenge_method: undefined }),
      options,
      /send code_challenge_method=S256/,
    ],
    ['the plain method', query({ code_challenge_method: 'plain' }), options, /must be S256/],
    ['a lowercase s256', query({ code_challenge_method: 's256' }), options, /must be S256/],
    [
      'a state over 512 characters',
      query({ state: 'x'.repeat(513) }),
      options,
      /state must be at most 512 printable ASCII/,
    ],
    [
      'a state with a newline',
      query({ state: 'a\nb' }),
      options,
      /state must be at most 512 printable ASCII/,
    ],
    [
      'a repeated redirect_uri',
      query({
        redirect_uri: ['com.example.app:/oauth/callback', 'com.example.app:/oauth/callback'],
      }),
      options,
      /redirect_uri must be given once/,
    ],
    ['a repeated state', query({ state: ['a', 'b'] }), options, /state must be given once/],
    [
      'code_challenge without redirect_uri',
      query({ redirect_uri: undefined }),
      options,
      /code_challenge was sent without redirect_uri/,
    ],
  ])('refuses %s with a 400', (_label, q, opts, message) => {
    expect(refusal(q, opts)).toMatch(message);
  });

  it('never echoes the redirect URI or state it refuses', () => {
    const bad = `com.example.evil:/${randomBytes(8).toString('hex')}`;
    const message = refusal(query({ redirect_uri: bad }));
    expect(message).not.toContain(bad);
    const state = `${randomBytes(8).toString('hex')}${'x'.repeat(600)}`;
    expect(refusal(query({ state }))).not.toContain(state.slice(0, 16));
  });
});

describe('the native login kept in the OAuth state (appState)', () => {
  it('round-trips through JSON in a compact form', () => {
    const request = parseNativeLoginRequest(query(), options)!;
    const kept = JSON.parse(
      JSON.stringify({ b: 'binding', r: '/', n: toNativeLoginAppState(request) }),
    );
    expect(kept.n).toEqual({
      u: 'com.example.app:/oauth/callback',
      c: challenge,
      s: 'app-state-1',
    });
    expect(fromNativeLoginAppState(kept.n, options)).toEqual(request);
    const noState = parseNativeLoginRequest(query({ state: undefined }), options)!;
    expect(toNativeLoginAppState(noState)).toEqual({
      u: 'com.example.app:/oauth/callback',
      c: challenge,
    });
    expect(fromNativeLoginAppState(toNativeLoginAppState(noState), options)).toEqual(noState);
  });

  it('is undefined for a browser login', () => {
    expect(fromNativeLoginAppState(undefined, options)).toBeUndefined();
  });

  it('is refused when the redirect URI left the allow-list since the login started, or the value is malformed', () => {
    const kept = toNativeLoginAppState(parseNativeLoginRequest(query(), options)!);
    const narrower = nativeOptions(['http://127.0.0.1/callback']);
    for (const [value, opts] of [
      [kept, narrower],
      [kept, undefined],
      [{ ...kept, c: 'short' }, options],
      [{ ...kept, s: 42 }, options],
      ['a string', options],
      [null, options],
    ] as const) {
      expect(() => fromNativeLoginAppState(value, opts)).toThrow(AtProtoBadRequestError);
    }
  });
});
