/**
 * IssuerKeyResolver against a scripted fetch (the way the verifier injects its guarded
 * fetch): what an issuer relies on when its directory or host is busy, and when someone else
 * sends bad-signature tokens in its name to force re-resolutions.
 */
import { jest } from '@jest/globals';
import { Secp256k1Keypair } from '@atproto/crypto';
import { AtProtoServiceJwtError } from '../../lib/errors/at-proto-service-jwt.error.js';
import {
  type IdentityModule,
  IssuerKeyResolver,
} from '../../lib/service-auth/issuer-key-resolver.js';

const DID = 'did:plc:abcdefghijklmnopqrstuvwx';

type Answer = Response | Error;

/** A fetch answering from a script, one answer per request; it records the URLs asked. */
function scriptedFetch(answers: (() => Answer)[]) {
  const urls: string[] = [];
  const fetch = async (input: string | URL | Request): Promise<Response> => {
    urls.push(input instanceof Request ? input.url : String(input));
    const next = answers.shift();
    if (!next) throw new Error('the script has no more answers');
    const answer = next();
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return { fetch: fetch as typeof globalThis.fetch, urls };
}

function documentOf(did: string, signingKey: string): () => Response {
  return () =>
    Response.json({
      '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1'],
      id: did,
      verificationMethod: [
        {
          id: `${did}#atproto`,
          type: 'Multikey',
          controller: did,
          publicKeyMultibase: signingKey.slice('did:key:'.length),
        },
      ],
    });
}

const status = (code: number) => () => new Response(null, { status: code });

async function resolverWith(answers: (() => Answer)[]) {
  const identity = (await import('@atproto/identity')) as IdentityModule;
  const { fetch, urls } = scriptedFetch(answers);
  const resolver = new IssuerKeyResolver(identity, {
    plcUrl: 'https://plc.example',
    fetch,
    timeoutMs: 5_000,
  });
  return { resolver, urls };
}

async function refusal(pending: Promise<unknown>): Promise<{ error: string; status: number }> {
  const error = await pending.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AtProtoServiceJwtError);
  const { error: name, status: code } = error as AtProtoServiceJwtError;
  return { error: name, status: code };
}

const unavailable = { error: 'IssuerUnavailable', status: 503 };

describe('IssuerKeyResolver', () => {
  let key: string;
  let rotated: string;
  beforeAll(async () => {
    key = (await Secp256k1Keypair.create()).did();
    rotated = (await Secp256k1Keypair.create()).did();
  });
  afterEach(() => jest.restoreAllMocks());

  describe('a directory or host that is busy is unavailable (503), not a bad issuer', () => {
    it.each([429, 408])('the PLC directory answering %i', async (code) => {
      const { resolver, urls } = await resolverWith([status(code), documentOf(DID, key)]);
      expect(await refusal(resolver.key(DID, false))).toEqual(unavailable);
      // Short negative cache: asked again only after it.
      expect(await refusal(resolver.key(DID, false))).toEqual(unavailable);
      expect(urls).toHaveLength(1);
      const now = Date.now();
      jest.spyOn(Date, 'now').mockReturnValue(now + 5_001);
      expect(await resolver.key(DID, false)).toBe(key);
    });

    it.each([429, 408, 503])('a did:web host answering %i', async (code) => {
      const did = 'did:web:issuer.example';
      const { resolver, urls } = await resolverWith([status(code)]);
      expect(await refusal(resolver.key(did, false))).toEqual(unavailable);
      expect(urls).toEqual(['https://issuer.example/.well-known/did.json']);
    });

    it('a network failure', async () => {
      const { resolver } = await resolverWith([() => new TypeError('fetch failed')]);
      expect(await refusal(resolver.key(DID, false))).toEqual(unavailable);
    });

    it('a DID the directory does not know is still a bad issuer (401)', async () => {
      const { resolver } = await resolverWith([status(404)]);
      expect(await refusal(resolver.key(DID, false))).toEqual({
        error: 'BadJwtIssuer',
        status: 401,
      });
    });
  });

  describe('a forced re-resolution that fails', () => {
    it.each([429, 408, 503])(
      '(%i) keeps serving the cached key and refuses nothing',
      async (code) => {
        const { resolver, urls } = await resolverWith([documentOf(DID, key), status(code)]);
        expect(await resolver.key(DID, false)).toBe(key);
        // After a bad signature: the cached key, so the token fails on its signature.
        expect(await resolver.key(DID, true)).toBe(key);
        // The issuer's own tokens still resolve, from the cache.
        expect(await resolver.key(DID, false)).toBe(key);
        expect(urls).toHaveLength(2);
      },
    );

    it('without a cached document, refuses as a first resolution does', async () => {
      const { resolver } = await resolverWith([status(429)]);
      expect(await refusal(resolver.key(DID, true))).toEqual(unavailable);
    });
  });

  describe('forced re-resolutions of one DID', () => {
    it('happen once per 30 s: a flood of bad signatures reuses the cached document', async () => {
      const { resolver, urls } = await resolverWith([
        documentOf(DID, key),
        documentOf(DID, rotated),
        documentOf(DID, rotated),
      ]);
      expect(await resolver.key(DID, false)).toBe(key);
      // A rotated key is found by the first forced re-resolution.
      expect(await resolver.key(DID, true)).toBe(rotated);
      for (let i = 0; i < 5; i++) expect(await resolver.key(DID, true)).toBe(rotated);
      expect(urls).toHaveLength(2);
      const now = Date.now();
      jest.spyOn(Date, 'now').mockReturnValue(now + 30_001);
      expect(await resolver.key(DID, true)).toBe(rotated);
      expect(urls).toHaveLength(3);
    });

    it('failed ones count too: a busy directory is not asked again at will', async () => {
      const { resolver, urls } = await resolverWith([documentOf(DID, key), status(429)]);
      expect(await resolver.key(DID, false)).toBe(key);
      for (let i = 0; i < 5; i++) expect(await resolver.key(DID, true)).toBe(key);
      expect(urls).toHaveLength(2);
    });
  });
});
