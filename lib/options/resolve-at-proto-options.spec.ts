import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import type { AtProtoModuleOptions } from './at-proto-options.interface.js';
import { resolveAtProtoOptions } from './resolve-at-proto-options.js';

const encKey = randomBytes(32).toString('base64');
const encryption = { activeKeyId: 'e1', keys: { e1: encKey } };

function ecKey(kid = 'k1'): Record<string, unknown> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), ...(kid ? { kid } : {}) };
}

async function problemsOf(options: unknown): Promise<readonly string[]> {
  try {
    await resolveAtProtoOptions(options as AtProtoModuleOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(AtProtoConfigError);
    return (error as AtProtoConfigError).problems;
  }
  throw new Error('expected AtProtoConfigError');
}

describe('resolveAtProtoOptions', () => {
  it('builds a confidential private_key_jwt client for an https publicUrl', async () => {
    const r = await resolveAtProtoOptions({
      publicUrl: 'https://app.example.com/api/',
      clientName: 'Acme',
      keys: [ecKey('k1'), JSON.stringify(ecKey('k2'))],
      activeSigningKid: 'k1',
      encryption,
    });
    expect(r.clientMode).toBe('confidential');
    expect(r.publicUrl).toBe('https://app.example.com/api');
    expect(r.clientMetadata).toMatchObject({
      client_id: 'https://app.example.com/api/oauth/client-metadata.json',
      redirect_uris: ['https://app.example.com/api/oauth/callback'],
      jwks_uri: 'https://app.example.com/api/oauth/jwks.json',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      dpop_bound_access_tokens: true,
      scope: 'atproto transition:generic',
      client_name: 'Acme',
    });
    expect(r.signingKeys.map((k) => k.kid)).toEqual(['k1', 'k2']);
    expect(r.cookie.sessionName).toBe('__Host-atproto_session');
    expect(r.cookie.secure).toBe(true);
    expect(r.globalGuard).toBe(true);
  });

  it('accepts a PKCS#8 PEM with its kid', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const r = await resolveAtProtoOptions({
      publicUrl: 'https://app.example.com',
      keys: [{ kid: 'pem-1', pem }],
      encryption,
    });
    expect(r.signingKeys[0]?.kid).toBe('pem-1');
  });

  it('runs as the loopback development client on http://127.0.0.1, without keys', async () => {
    const r = await resolveAtProtoOptions({ publicUrl: 'http://127.0.0.1:3000', encryption });
    expect(r.clientMode).toBe('loopback');
    expect(r.clientMetadata.token_endpoint_auth_method).toBe('none');
    expect(r.clientMetadata.client_id).toMatch(/^http:\/\/localhost\?/);
    expect(new URL(r.clientMetadata.client_id!).searchParams.get('redirect_uri')).toBe(
      'http://127.0.0.1:3000/oauth/callback',
    );
    expect(r.cookie.sessionName).toBe('atproto_session');
    expect(r.cookie.secure).toBe(false);
  });

  it('lists every problem in one error, saying how to fix each, without key material', async () => {
    const notPrivate = ecKey('pub');
    delete notPrivate.d;
    const noKid = ecKey('');
    const problems = await problemsOf({
      publicUrl: 'https://app.example.com',
      scope: 'transition:generic',
      keys: [notPrivate, noKid, 'garbage', ecKey('dup'), ecKey('dup')],
      encryption: { activeKeyId: 'x', keys: { e1: randomBytes(16).toString('base64') } },
      appSession: { idleTtl: -5 },
    });
    const text = problems.join('\n');
    expect(text).toMatch(/scope must contain "atproto"/);
    expect(text).toMatch(/keys\[0\] is not a private key/);
    expect(text).toMatch(/keys\[1\] has no "kid"/);
    expect(text).toMatch(/keys\[2\] is neither a JWK/);
    expect(text).toMatch(/keys\[4\] repeats kid "dup"/);
    expect(text).toMatch(/decodes to 16 bytes/);
    expect(text).toMatch(/activeKeyId "x" is not a key id/);
    expect(text).toMatch(/appSession.idleTtl must be positive/);
    expect(problems.length).toBeGreaterThanOrEqual(8);
    expect(text).not.toContain(noKid.d as string);
    expect(text).not.toContain(encKey);
  });

  it('requires publicUrl and encryption, and keys with https', async () => {
    const text = (await problemsOf({})).join('\n');
    expect(text).toMatch(/publicUrl is required/);
    expect(text).toMatch(/encryption is required/);
    expect((await problemsOf({ publicUrl: 'https://a.example', encryption })).join()).toMatch(
      /keys is required with an https publicUrl/,
    );
  });

  it.each([
    ['http://localhost:3000', /must use the IP, e.g. http:\/\/127.0.0.1:3000/],
    ['http://app.example.com', /must be https/],
    ['ftp://app.example.com', /must be an https URL/],
    ['not a url', /not an absolute URL/],
    ['https://app.example.com/?x=1', /must not contain a query/],
  ])('refuses publicUrl %s', async (publicUrl, message) => {
    expect((await problemsOf({ publicUrl, encryption, keys: [ecKey()] })).join('\n')).toMatch(
      message,
    );
  });

  it('refuses a key that is not P-256', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'p384' };
    expect(
      (await problemsOf({ publicUrl: 'https://a.example', encryption, keys: [jwk] })).join(),
    ).toMatch(/must be an EC P-256 key/);
  });

  it('takes private hosts only as host or host:port, and keeps http and private networks apart', async () => {
    const base = { publicUrl: 'https://a.example', encryption, keys: [ecKey()] };
    const ok = await resolveAtProtoOptions({
      ...base,
      allowHttpServers: true,
      dangerouslyAllowPrivateHosts: ['localhost:2583', '127.0.0.1', '[::1]:2582', 'PDS.internal'],
    });
    expect(ok.privateHosts).toEqual(['localhost:2583', '127.0.0.1', '[::1]:2582', 'pds.internal']);
    expect(ok.allowHttpServers).toBe(true);
    // allowHttpServers alone opens no private host.
    expect((await resolveAtProtoOptions({ ...base, allowHttpServers: true })).privateHosts).toEqual(
      [],
    );
    for (const bad of [
      'http://localhost:2583',
      'localhost:2583/x',
      '*.internal',
      'user@localhost',
      '::1',
      '0x7f.1',
      '',
    ]) {
      expect(
        (await problemsOf({ ...base, dangerouslyAllowPrivateHosts: [bad] })).join('\n'),
      ).toMatch(/dangerouslyAllowPrivateHosts.*host or host:port/);
    }
  });

  it('takes cookie.domain only when it is the publicUrl host or a parent of it', async () => {
    const base = { publicUrl: 'https://app.example.com', encryption, keys: [ecKey()] };
    for (const domain of ['app.example.com', 'example.com', '.example.com', 'EXAMPLE.com']) {
      const ok = await resolveAtProtoOptions({ ...base, cookie: { domain } });
      expect(ok.cookie.domain).toBe(domain.replace(/^\./, '').toLowerCase());
      expect(ok.cookie.sessionName).toBe('__Secure-atproto_session');
    }
    for (const domain of [
      'https://example.com',
      'example.com/path',
      'example.com:443',
      '*.example.com',
      'badexample.com',
      'other.example.com',
      'sub.app.example.com',
      'com',
      '127.0.0.1',
      '[::1]',
      'exa mple.com',
      '',
    ]) {
      expect((await problemsOf({ ...base, cookie: { domain } })).join('\n')).toMatch(
        /cookie\.domain/,
      );
    }
  });

  it('binds new sessions to the named signing key, which must be one of keys', async () => {
    const base = { publicUrl: 'https://app.example.com', encryption };
    const [k1, k2] = [ecKey('k1'), ecKey('k2')];
    const resolved = await resolveAtProtoOptions({
      ...base,
      keys: [k1, k2],
      activeSigningKid: 'k2',
    });
    expect(resolved.signingKeys.map((k) => k.kid)).toEqual(['k2', 'k1']);
    expect(resolved.activeSigningKid).toBe('k2');
    expect((await resolveAtProtoOptions({ ...base, keys: [k1] })).activeSigningKid).toBe('k1');
    expect((await problemsOf({ ...base, keys: [k1, k2] })).join()).toMatch(
      /activeSigningKid is required with several keys.*k1, k2/,
    );
    expect((await problemsOf({ ...base, keys: [k1, k2], activeSigningKid: 'k3' })).join()).toMatch(
      /activeSigningKid "k3" is not the kid of a key/,
    );
    for (const secret of [String(k2.d), randomBytes(32).toString('base64url')]) {
      const text = (await problemsOf({ ...base, keys: [k1, k2], activeSigningKid: secret })).join();
      expect(text).toMatch(/a value of \d+ characters/);
      expect(text).not.toContain(secret);
    }
    const pasted = JSON.stringify(k2);
    const text = (await problemsOf({ ...base, keys: [k1, k2], activeSigningKid: pasted })).join();
    expect(text).toMatch(/a value of \d+ characters/);
    expect(text).not.toContain(String(k2.d));
  });

  it('caps cleanup.batchSize at 10000 (one statement lists that many keys)', async () => {
    const base = { publicUrl: 'https://app.example.com', encryption, keys: [ecKey()] };
    const ok = await resolveAtProtoOptions({ ...base, cleanup: { batchSize: 10_000 } });
    expect(ok.cleanup.batchSize).toBe(10_000);
    expect((await problemsOf({ ...base, cleanup: { batchSize: 10_001 } })).join()).toMatch(
      /cleanup\.batchSize must be at most 10000/,
    );
  });

  it('takes trusted origins that are exact, https (or loopback) and reachable by the cookie', async () => {
    const base = { publicUrl: 'https://api.example.com', encryption, keys: [ecKey()] };
    const ok = await resolveAtProtoOptions({
      ...base,
      trustedOrigins: ['https://app.example.com', 'https://www.example.com'],
    });
    expect(ok.trustedOrigins).toEqual(['https://app.example.com', 'https://www.example.com']);
    // Another site: only with SameSite=None.
    expect(
      (await problemsOf({ ...base, trustedOrigins: ['https://app.other.example'] })).join(),
    ).toMatch(/another site than publicUrl.*sameSite: 'none'/);
    const none = await resolveAtProtoOptions({
      ...base,
      cookie: { sameSite: 'none' },
      trustedOrigins: ['https://app.other.example'],
    });
    expect(none.trustedOrigins).toEqual(['https://app.other.example']);
    for (const bad of [
      'https://app.example.com/',
      'https://app.example.com/path',
      'http://app.example.com',
      'https://user@app.example.com',
      '*.example.com',
      'app.example.com',
    ]) {
      expect((await problemsOf({ ...base, trustedOrigins: [bad] })).join()).toMatch(
        /trustedOrigins\[0\]/,
      );
    }
    // Loopback and localhost origins are for development only: not next to an https backend.
    for (const local of [
      'http://127.0.0.1:5173',
      'https://127.0.0.1:8443',
      'https://localhost:5173',
    ]) {
      expect(
        (
          await problemsOf({ ...base, cookie: { sameSite: 'none' }, trustedOrigins: [local] })
        ).join(),
      ).toMatch(/trustedOrigins\[0\]/);
    }
    const dev = await resolveAtProtoOptions({
      publicUrl: 'http://127.0.0.1:3000',
      encryption,
      trustedOrigins: ['http://127.0.0.1:5173'],
    });
    expect(dev.trustedOrigins).toEqual(['http://127.0.0.1:5173']);
  });
});
