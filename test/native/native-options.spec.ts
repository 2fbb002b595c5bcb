import { randomBytes } from 'node:crypto';
import { AtProtoConfigError, resolveAtProtoOptions } from 'nestjs-atproto-auth';
import {
  matchRedirectUri,
  NATIVE_DEFAULTS,
  resolveNativeOptions,
  type AtProtoNativeOptions,
} from '../../lib/native/native-options.js';

const secret = () => randomBytes(32).toString('base64');
const valid = (): AtProtoNativeOptions => ({
  redirectUris: ['com.example.app:/oauth/callback', 'http://127.0.0.1/callback'],
  tokenSecrets: { activeKid: 't1', keys: { t1: secret() } },
});

function problemsOf(raw: unknown): string[] {
  const problems: string[] = [];
  const resolved = resolveNativeOptions(raw, problems);
  if (problems.length > 0) expect(resolved).toBeUndefined();
  return problems;
}

function redirectProblems(uri: unknown): string[] {
  return problemsOf({ ...valid(), redirectUris: [uri] });
}

describe('resolveNativeOptions', () => {
  it('is off (undefined, no problem) when native is not set', () => {
    const problems: string[] = [];
    expect(resolveNativeOptions(undefined, problems)).toBeUndefined();
    expect(problems).toEqual([]);
  });

  it('resolves custom-scheme, claimed https and loopback redirect URIs, the decoded secrets and the default lifetime', () => {
    const t1 = randomBytes(32);
    const t2 = randomBytes(48);
    const problems: string[] = [];
    const resolved = resolveNativeOptions(
      {
        redirectUris: [
          'com.example.app:/oauth/callback',
          'https://app.example.com/native/callback',
          'http://127.0.0.1/callback',
          'http://[::1]/callback',
          'http://127.0.0.1/callback',
        ],
        tokenSecrets: {
          activeKid: '2026-11',
          keys: { '2026-11': t1.toString('base64'), old: t2.toString('base64url') },
        },
      },
      problems,
    );
    expect(problems).toEqual([]);
    expect(resolved).toEqual({
      redirectUris: [
        'com.example.app:/oauth/callback',
        'https://app.example.com/native/callback',
        'http://127.0.0.1/callback',
        'http://[::1]/callback',
      ],
      activeKid: '2026-11',
      secrets: new Map([
        ['2026-11', new Uint8Array(t1)],
        ['old', new Uint8Array(t2)],
      ]),
      accessTokenTtlMs: 900_000,
    });
  });

  it.each([
    ['http://localhost/callback', /uses localhost: use http:\/\/127\.0\.0\.1/],
    ['http://localhost:8080/callback', /uses localhost/],
    ['https://localhost/callback', /uses localhost/],
    ['http://app.localhost/callback', /uses localhost/],
    ['https://localhost./callback', /uses localhost/],
    ['https://app.localhost./callback', /uses localhost/],
    ['https://*.example.com/callback', /wildcard/],
    ['com.example.app:/*', /wildcard/],
    ['com.example.app:/callback#x', /must not have a fragment/],
    ['https://app.example.com/callback#', /must not have a fragment/],
    ['https://app.example.com/callback?x=1', /must not have a query/],
    ['http://app.example.com/callback', /plain http on a host that is not a loopback IP/],
    ['http://192.168.1.2/callback', /plain http on a host that is not a loopback IP/],
    ['http://127.0.0.1:8080/callback', /without a port/],
    ['http://127.0.0.1', /without a port .* and with a path/],
    ['http://127.0.0.1/a/../callback', /normalized form "http:\/\/127\.0\.0\.1\/callback"/],
    ['HTTPS://App.Example.com/callback', /normalized form "https:\/\/app\.example\.com\/callback"/],
    ['https://user:pw@app.example.com/callback', /credentials/],
    ['myapp:/callback', /reverse domain name/],
    ['javascript:alert(1)', /reverse domain name/],
    ['data:text/html,hi', /reverse domain name/],
    ['file:///etc/passwd', /reverse domain name/],
    ['com.example.app://callback', /one slash after the scheme/],
    ['com.example.app:callback', /one slash after the scheme/],
    ['/callback', /not an absolute URI/],
    ['https://app.example.com/cällback', /printable ASCII/],
    ['https://app.example.com/a b', /printable ASCII/],
    ['', /non-empty string/],
    [42, /non-empty string/],
  ])('refuses the redirect URI %j', (uri, message) => {
    const problems = redirectProblems(uri);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^native\.redirectUris\[0\] /);
    expect(problems[0]).toMatch(message);
  });

  it('refuses a redirect URI longer than its column (2048 characters)', () => {
    expect(redirectProblems(`https://app.example.com/${'a'.repeat(2048)}`)).toEqual([
      expect.stringMatching(/^native\.redirectUris\[0\] is longer than 2048 characters/),
    ]);
  });

  it('refuses a missing or empty allow-list', () => {
    expect(problemsOf({ ...valid(), redirectUris: [] })[0]).toMatch(
      /native\.redirectUris must be a non-empty array/,
    );
    expect(problemsOf({ tokenSecrets: valid().tokenSecrets })[0]).toMatch(
      /native\.redirectUris must be a non-empty array/,
    );
  });

  it('accepts a secret of exactly 32 bytes, refuses 31, in base64 or base64url', () => {
    for (const encoding of ['base64', 'base64url'] as const) {
      const ok = randomBytes(32).toString(encoding);
      expect(problemsOf({ ...valid(), tokenSecrets: { activeKid: 'a', keys: { a: ok } } })).toEqual(
        [],
      );
      const short = randomBytes(31).toString(encoding);
      const problems = problemsOf({
        ...valid(),
        tokenSecrets: { activeKid: 'a', keys: { a: short } },
      });
      expect(problems).toEqual([
        expect.stringMatching(/\["a"\] decodes to 31 bytes; HS256 secrets must have 32/),
      ]);
    }
  });

  it.each([
    ['not base64', { activeKid: 'a', keys: { a: 'not base64!' } }, /\["a"\] is not base64/],
    ['a number', { activeKid: 'a', keys: { a: 42 } }, /\["a"\] is not base64/],
    [
      'a constant',
      { activeKid: 'a', keys: { a: Buffer.alloc(32, 7).toString('base64') } },
      /only 1 distinct byte value, so it is not random/,
    ],
    [
      'an invalid id',
      { activeKid: 'a b', keys: { 'a b': secret() } },
      /invalid id "a b"|invalid id \(an id of/,
    ],
    [
      'an active id that is not a key',
      { activeKid: 'b', keys: { a: secret() } },
      /activeKid "b" is not an id of native\.tokenSecrets\.keys \(known: "a"\)/,
    ],
    ['no active id', { keys: { a: secret() } }, /activeKid is required/],
    ['no keys', { activeKid: 'a', keys: {} }, /keys is empty/],
    ['no object', 'secret', /must be \{ activeKid/],
  ])('refuses token secrets with %s', (_label, tokenSecrets, message) => {
    const problems = problemsOf({ ...valid(), tokenSecrets });
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.join('\n')).toMatch(message);
  });

  it('refuses one secret under two ids, and ids that differ only in case', () => {
    const s = secret();
    expect(
      problemsOf({ ...valid(), tokenSecrets: { activeKid: 'a', keys: { a: s, b: s } } }),
    ).toEqual([
      expect.stringMatching(/\["a"\] and native\.tokenSecrets\.keys\["b"\] hold the same secret/),
    ]);
    expect(
      problemsOf({
        ...valid(),
        tokenSecrets: { activeKid: 'a', keys: { a: secret(), A: secret() } },
      }),
    ).toEqual([expect.stringMatching(/duplicate id "A" \(same as "a"/)]);
  });

  it('never echoes a secret: one pasted as activeKid or as a key id is shown by length and hash', () => {
    const bytes = randomBytes(32);
    const b64 = bytes.toString('base64');
    const b64url = bytes.toString('base64url');
    const problems = [
      ...problemsOf({ ...valid(), tokenSecrets: { activeKid: b64url, keys: { a: b64 } } }),
      ...problemsOf({ ...valid(), tokenSecrets: { activeKid: b64, keys: { a: b64 } } }),
      ...problemsOf({ ...valid(), tokenSecrets: { activeKid: 'x', keys: { [b64url]: b64 } } }),
      ...problemsOf({
        ...valid(),
        tokenSecrets: { activeKid: 'x', keys: { a: b64.slice(0, 20) } },
      }),
    ];
    expect(problems.length).toBeGreaterThanOrEqual(4);
    const text = problems.join('\n');
    expect(text).toMatch(/\(an id of 43 characters, SHA-256 [0-9a-f]{6}…\)/);
    for (const needle of [b64, b64url, bytes.toString('hex'), b64.slice(0, 20)]) {
      expect(text).not.toContain(needle);
    }
  });

  it('takes accessTokenTtl from 1 minute to 1 hour', () => {
    const ttl = (accessTokenTtl: unknown) => {
      const problems: string[] = [];
      return { resolved: resolveNativeOptions({ ...valid(), accessTokenTtl }, problems), problems };
    };
    expect(ttl(undefined).resolved?.accessTokenTtlMs).toBe(NATIVE_DEFAULTS.accessTokenTtlMs);
    expect(ttl(60_000).resolved?.accessTokenTtlMs).toBe(60_000);
    expect(ttl(3_600_000).resolved?.accessTokenTtlMs).toBe(3_600_000);
    for (const bad of [59_999, 3_600_001, 90_000.5, '900000', -1]) {
      expect(ttl(bad).problems).toEqual([
        expect.stringMatching(
          /native\.accessTokenTtl must be a whole number of milliseconds from 60000/,
        ),
      ]);
    }
  });

  it('refuses an unknown option (a typo) and a native value that is not an object', () => {
    expect(problemsOf({ ...valid(), redirectUri: ['x'] })).toEqual([
      expect.stringMatching(/native\.redirectUri is not an option \(known: redirectUris/),
    ]);
    expect(problemsOf(['x'])).toEqual([expect.stringMatching(/native must be an object/)]);
  });

  it('reports native problems at boot with every other problem (AtProtoConfigError)', async () => {
    const error = await resolveAtProtoOptions({
      publicUrl: 'http://127.0.0.1:3000',
      encryption: { activeKeyId: 'e', keys: { e: randomBytes(32).toString('base64') } },
      storage: 'memory',
      native: { redirectUris: ['http://localhost/cb'], tokenSecrets: { activeKid: 'a', keys: {} } },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AtProtoConfigError);
    const problems = (error as AtProtoConfigError).problems.join('\n');
    expect(problems).toMatch(/native\.redirectUris\[0\] .*uses localhost/);
    expect(problems).toMatch(/native\.tokenSecrets\.keys is empty/);
  });
});

describe('matchRedirectUri', () => {
  const options = {
    redirectUris: [
      'com.example.app:/oauth/callback',
      'https://app.example.com/native/callback',
      'http://127.0.0.1/callback',
      'http://[::1]/cli',
    ],
  };

  it('matches custom-scheme and https URIs exactly', () => {
    expect(matchRedirectUri('com.example.app:/oauth/callback', options)).toBe(
      'com.example.app:/oauth/callback',
    );
    expect(matchRedirectUri('https://app.example.com/native/callback', options)).toBe(
      'https://app.example.com/native/callback',
    );
    for (const other of [
      'com.example.app:/oauth/callback/',
      'com.example.app:/oauth/Callback',
      'com.example.app://oauth/callback',
      'com.example.evil:/oauth/callback',
      'https://app.example.com/native/callback?x=1',
      'https://app.example.com/native/callback#',
      'https://app.example.com:443/native/callback',
      'https://APP.example.com/native/callback',
      'https://app.example.com/native/callback/..',
      'https://app.example.com/native/%63allback',
    ]) {
      expect(matchRedirectUri(other, options)).toBeUndefined();
    }
  });

  it('accepts any port on http://127.0.0.1 and http://[::1], and nothing else there', () => {
    for (const uri of [
      'http://127.0.0.1/callback',
      'http://127.0.0.1:1/callback',
      'http://127.0.0.1:49152/callback',
      'http://127.0.0.1:65535/callback',
    ]) {
      expect(matchRedirectUri(uri, options)).toBe('http://127.0.0.1/callback');
    }
    expect(matchRedirectUri('http://[::1]:5000/cli', options)).toBe('http://[::1]/cli');
    for (const other of [
      'http://127.0.0.1:0/callback',
      'http://127.0.0.1:65536/callback',
      'http://127.0.0.1:080/callback',
      'http://127.0.0.1:8080/callback?x=1',
      'http://127.0.0.1:8080/callback#x',
      'http://127.0.0.1:8080/other',
      'http://127.0.0.1:8080/callback/',
      'http://localhost:8080/callback',
      'http://127.0.0.2:8080/callback',
      'https://127.0.0.1:8080/callback',
      'http://[::1]:5000/callback',
      'http://127.0.0.1:8080/cli',
    ]) {
      expect(matchRedirectUri(other, options)).toBeUndefined();
    }
  });
});
