/**
 * Service-auth tokens signed by the tests themselves (the PDS only mints valid ones), with
 * identities the tests control: a did:plc registered on the local PLC (its key can be
 * rotated, or removed) and a did:web served on localhost.
 * @internal
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { P256Keypair, Secp256k1Keypair, type Keypair } from '@atproto/crypto';
import { randomBytes } from 'node:crypto';

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** What a test token carries; `undefined` leaves a claim out. */
export interface TestClaims {
  iss: string;
  aud: string;
  exp?: number;
  iat?: number;
  lxm?: string;
  jti?: string;
  [claim: string]: unknown;
}

/**
 * A JWT signed by `key` with exactly these header fields and claims (`alg` from the key
 * unless given; `exp` 60 s ahead, `iat` now and a random `jti` unless given as `undefined`
 * explicitly through `omit`).
 */
export async function signToken(
  key: Keypair,
  claims: TestClaims,
  options: { header?: Record<string, unknown>; omit?: string[] } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = {
    iat: now,
    exp: now + 60,
    jti: randomBytes(16).toString('hex'),
    ...claims,
  };
  for (const name of options.omit ?? []) delete payload[name];
  const header = { typ: 'JWT', alg: key.jwtAlg, ...options.header };
  const signed = `${b64(header)}.${b64(payload)}`;
  const sig = Buffer.from(await key.sign(Buffer.from(signed, 'utf8'))).toString('base64url');
  return `${signed}.${sig}`;
}

/** A did:plc on the local PLC directory, with its signing key and the key that may change it. */
export interface PlcIdentity {
  did: string;
  /** Its current `#atproto` key. */
  key: Keypair;
  /** Makes `next` its `#atproto` key (a rotation). */
  rotate(next: Keypair): Promise<void>;
  /** Removes every verification method from its DID document. */
  removeKeys(): Promise<void>;
}

export async function registerPlcIdentity(plcUrl: string, handle: string): Promise<PlcIdentity> {
  // @did-plc/lib is CommonJS: its named exports are what Node's CJS interop exposes.
  const { Client } = await import('@did-plc/lib');
  const client = new Client(plcUrl);
  const rotation = await Secp256k1Keypair.create();
  const key = await Secp256k1Keypair.create();
  const did = await client.createDid({
    signingKey: key.did(),
    handle,
    pds: 'https://pds.e2e.internal',
    rotationKeys: [rotation.did()],
    signer: rotation,
  });
  const identity: PlcIdentity = {
    did,
    key,
    async rotate(next) {
      await client.updateAtprotoKey(did, rotation, next.did());
      identity.key = next;
    },
    async removeKeys() {
      await client.updateData(did, rotation, (op) => ({ ...op, verificationMethods: {} }));
    },
  };
  return identity;
}

/** A did:web served from a listener on localhost, with an `#atproto` and an `#atproto_label` key. */
export interface WebIdentity {
  did: string;
  /** `localhost:PORT`, for `dangerouslyAllowPrivateHosts`. */
  host: string;
  /** Its `#atproto` key (P-256: ES256). */
  key: Keypair;
  /** Its `#atproto_label` key (secp256k1), what a labeler signs with. */
  labelKey: Keypair;
  /** Requests for the DID document so far. */
  requests: number;
  /** When set, the document is answered 404 (the DID does not exist). */
  missing: boolean;
  server: Server;
}

export async function startWebIdentity(): Promise<WebIdentity> {
  const key = await P256Keypair.create();
  const labelKey = await Secp256k1Keypair.create();
  const identity = { requests: 0, missing: false, key, labelKey } as unknown as WebIdentity;
  identity.server = createServer((req, res) => {
    if (req.url !== '/.well-known/did.json') {
      res.writeHead(404).end();
      return;
    }
    identity.requests++;
    if (identity.missing) {
      res.writeHead(404).end();
      return;
    }
    const method = (id: string, k: Keypair) => ({
      id: `${identity.did}#${id}`,
      type: 'Multikey',
      controller: identity.did,
      publicKeyMultibase: k.did().slice('did:key:'.length),
    });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        '@context': ['https://www.w3.org/ns/did/v1'],
        id: identity.did,
        verificationMethod: [method('atproto', key), method('atproto_label', labelKey)],
        service: [],
      }),
    );
  });
  // localhost: @atproto/identity fetches did:web:localhost%3APORT over plain http.
  identity.server.listen(0, 'localhost');
  await once(identity.server, 'listening');
  const { port } = identity.server.address() as AddressInfo;
  identity.host = `localhost:${port}`;
  identity.did = `did:web:localhost%3A${port}`;
  return identity;
}

/** A port on localhost where nothing listens. */
export async function closedPort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, 'localhost');
  await once(probe, 'listening');
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

export { P256Keypair, Secp256k1Keypair };
