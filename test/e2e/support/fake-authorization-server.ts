import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A hostile (or broken) AT Protocol server on loopback: it serves valid protected-resource
 * and authorization-server metadata, so that the OAuth client accepts it as a user's PDS and
 * authorization server, and answers each endpoint the way a test decides. Used where the
 * real PDS cannot misbehave on purpose (redirects to internal addresses, hostile error text).
 * It also answers as a PLC directory, naming itself the PDS of every `did:plc`.
 */
export interface FakeAuthorizationServer {
  /** `http://127.0.0.1:PORT`: PDS origin and issuer. */
  readonly origin: string;
  /** `127.0.0.1:PORT`, for `dangerouslyAllowPrivateHosts`. */
  readonly host: string;
  /** Requests received, as `METHOD path`. */
  readonly requests: string[];
  /** Form bodies of the POSTs received, by path. */
  readonly forms: Map<string, URLSearchParams>;
  /** How each endpoint answers: `/par`, `/token`, `/revoke`, `/xrpc/...` (prefix match). */
  readonly routes: Map<string, (req: IncomingMessage, res: ServerResponse) => void>;
  close(): Promise<void>;
}

export async function startFakeAuthorizationServer(): Promise<FakeAuthorizationServer> {
  const requests: string[] = [];
  const forms = new Map<string, URLSearchParams>();
  const routes = new Map<string, (req: IncomingMessage, res: ServerResponse) => void>();
  let origin = '';
  const json = (res: ServerResponse, status: number, body: unknown) =>
    res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));

  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    requests.push(`${req.method} ${path}`);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'POST')
        forms.set(path, new URLSearchParams(Buffer.concat(chunks).toString()));
      if (path === '/.well-known/oauth-protected-resource') {
        return json(res, 200, {
          resource: origin,
          authorization_servers: [origin],
          scopes_supported: [],
          bearer_methods_supported: ['header'],
        });
      }
      if (path === '/.well-known/oauth-authorization-server') {
        return json(res, 200, {
          issuer: origin,
          scopes_supported: ['atproto', 'transition:generic'],
          subject_types_supported: ['public'],
          response_types_supported: ['code'],
          response_modes_supported: ['query', 'fragment'],
          grant_types_supported: ['authorization_code', 'refresh_token'],
          code_challenge_methods_supported: ['S256'],
          ui_locales_supported: ['en-US'],
          display_values_supported: ['page'],
          authorization_response_iss_parameter_supported: true,
          request_object_signing_alg_values_supported: ['none', 'ES256'],
          request_parameter_supported: true,
          request_uri_parameter_supported: true,
          require_request_uri_registration: true,
          token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'],
          token_endpoint_auth_signing_alg_values_supported: ['ES256'],
          dpop_signing_alg_values_supported: ['ES256'],
          client_id_metadata_document_supported: true,
          require_pushed_authorization_requests: true,
          authorization_endpoint: `${origin}/authorize`,
          token_endpoint: `${origin}/token`,
          revocation_endpoint: `${origin}/revoke`,
          pushed_authorization_request_endpoint: `${origin}/par`,
        });
      }
      // As a PLC directory (plcDirectoryUrl): every did:plc names this server as its PDS.
      const did = decodeURIComponent(path.slice(1));
      if (req.method === 'GET' && /^did:plc:[a-z2-7]{24}$/.test(did)) {
        return json(res, 200, {
          '@context': ['https://www.w3.org/ns/did/v1'],
          id: did,
          alsoKnownAs: ['at://fake.test'],
          verificationMethod: [],
          service: [
            { id: '#atproto_pds', type: 'AtprotoPersonalDataServer', serviceEndpoint: origin },
          ],
        });
      }
      for (const [prefix, handler] of routes) if (path.startsWith(prefix)) return handler(req, res);
      json(res, 404, { error: 'not_found' });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  origin = `http://127.0.0.1:${port}`;
  return {
    origin,
    host: `127.0.0.1:${port}`,
    requests,
    forms,
    routes,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** A TCP listener that counts connections: where a refused redirect must never arrive. */
export async function startConnectionCounter(): Promise<{
  url: string;
  connections: () => number;
  close: () => Promise<void>;
}> {
  let connections = 0;
  const server = createServer((_req, res) => res.end('{"internal":"secret"}'));
  server.on('connection', () => connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => connections,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
