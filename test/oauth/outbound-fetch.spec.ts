import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type ResolvedAtProtoOptions } from 'nestjs-atproto-auth';
import { clientFetch } from '../../lib/oauth/oauth-client.factory.js';

/**
 * The fetch the OAuth client uses must never reach a private address the options do not
 * list, on the first request or on any redirect hop, and must never let a request that
 * carries credentials (PAR, token, revocation) follow a redirect at all.
 */

interface Listener {
  server: Server;
  port: number;
  /** TCP connections accepted (a refused hop must not even connect). */
  connections: number;
  /** Requests received, as `METHOD path`. */
  requests: string[];
}

async function listen(
  handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end('{}'),
): Promise<Listener> {
  const listener: Listener = {
    server: createServer((req, res) => {
      listener.requests.push(`${req.method} ${req.url}`);
      req.resume();
      req.on('end', () => handler(req, res));
    }),
    port: 0,
    connections: 0,
    requests: [],
  };
  listener.server.on('connection', () => listener.connections++);
  await new Promise<void>((r) => listener.server.listen(0, '127.0.0.1', r));
  listener.port = (listener.server.address() as AddressInfo).port;
  return listener;
}

function options(privateHosts: string[], allowHttpServers = true): ResolvedAtProtoOptions {
  return {
    allowHttpServers,
    privateHosts,
    httpTimeoutMs: 5000,
  } as Partial<ResolvedAtProtoOptions> as ResolvedAtProtoOptions;
}

/** The error's class name (errors from Node's fetch come from another realm under Jest). */
const nameOf = (error: unknown) => (error as object | undefined)?.constructor.name;

const form = (fields: Record<string, string>) => ({
  method: 'POST',
  headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});

describe('clientFetch (the OAuth client fetch)', () => {
  let internal: Listener; // stands for 127.0.0.1:6379, 169.254.169.254, 10.x...
  let server: Listener; // an allow-listed server that redirects there
  let other: Listener; // another allow-listed server, a legitimate redirect target

  beforeAll(async () => {
    internal = await listen();
    other = await listen((_req, res) => res.end('{"ok":true}'));
    server = await listen((req, res) => {
      const to = /^\/(xrpc\/allowed|oauth\/par)/.test(req.url ?? '')
        ? `http://127.0.0.1:${other.port}/xrpc/landed`
        : req.url?.startsWith('/xrpc/hostname')
          ? `http://localhost:${internal.port}/admin`
          : `http://127.0.0.1:${internal.port}/admin`;
      res.writeHead(307, { Location: to }).end();
    });
  });
  afterAll(async () => {
    for (const l of [internal, server, other]) await new Promise((r) => l.server.close(r));
  });
  beforeEach(() => {
    for (const l of [internal, server, other]) {
      l.connections = 0;
      l.requests.length = 0;
    }
  });

  const fetchOf = () =>
    clientFetch(options([`127.0.0.1:${server.port}`, `127.0.0.1:${other.port}`]));

  it('never follows a redirect on a credential-bearing POST (PAR, token, revoke)', async () => {
    for (const grant of ['authorization_code', 'refresh_token']) {
      const request = new Request(`http://127.0.0.1:${server.port}/oauth/token`, {
        ...form({ grant_type: grant, client_id: 'x' }),
      });
      const error = await fetchOf()(request).catch((e: unknown) => e);
      // A TypeError during a refresh makes the OAuth client delete the session.
      expect(nameOf(error)).toBe('FetchRequestError');
    }
    // Even to a server the policy allows: the body (client assertion, code, refresh token)
    // is never re-sent elsewhere.
    const par = await fetchOf()(
      new Request(`http://127.0.0.1:${server.port}/oauth/par`, form({ client_id: 'x' })),
    ).catch((e: unknown) => e);
    expect(nameOf(par)).toBe('FetchRequestError');
    expect(server.requests).toEqual(['POST /oauth/token', 'POST /oauth/token', 'POST /oauth/par']);
    expect(internal.connections).toBe(0);
    expect(other.connections).toBe(0);
  });

  it('checks every redirect hop of a GET against the policy (IP literal and host name)', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/xrpc/hostname']) {
      const error = await fetchOf()(`http://127.0.0.1:${server.port}${path}`).catch(
        (e: unknown) => e,
      );
      expect(nameOf(error)).toBe('FetchRequestError');
    }
    expect(internal.connections).toBe(0);
  });

  it('checks every redirect hop of a PDS call made through the session (XRPC)', async () => {
    const error = await fetchOf()(
      new Request(`http://127.0.0.1:${server.port}/xrpc/com.example.do`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: '{"a":1}',
      }),
    ).catch((e: unknown) => e);
    expect(nameOf(error)).toBe('FetchRequestError');
    expect(internal.connections).toBe(0);
  });

  it('still follows a PDS redirect to another allowed server', async () => {
    const res = await fetchOf()(`http://127.0.0.1:${server.port}/xrpc/allowed`);
    expect(res.status).toBe(200);
    expect(other.requests).toEqual(['GET /xrpc/landed']);
  });

  it('refuses a private address that is not listed, before connecting', async () => {
    for (const url of [
      `http://127.0.0.1:${internal.port}/`,
      `http://localhost:${internal.port}/`,
      // listed host, other port
      `http://127.0.0.1:${internal.port}/?via=${server.port}`,
    ]) {
      const error = await fetchOf()(url).catch((e: unknown) => e);
      expect(nameOf(error)).toBe('FetchRequestError');
    }
    expect(internal.connections).toBe(0);
  });

  it('restricts a listed host name to its port, on the first request and on redirect hops', async () => {
    const byName = clientFetch(options([`localhost:${server.port}`]));
    const direct = await byName(`http://localhost:${internal.port}/`).catch((e: unknown) => e);
    expect(nameOf(direct)).toBe('FetchRequestError');
    const hop = await byName(`http://localhost:${server.port}/xrpc/hostname`).catch(
      (e: unknown) => e,
    );
    expect(nameOf(hop)).toBe('FetchRequestError');
    expect(server.requests).toEqual(['GET /xrpc/hostname']);
    expect(internal.connections).toBe(0);
  });

  it('turns a URL the Request constructor refuses into a FetchRequestError, not a TypeError', async () => {
    const error = await fetchOf()(`http://user:pw@127.0.0.1:${server.port}/`).catch(
      (e: unknown) => e,
    );
    expect(nameOf(error)).toBe('FetchRequestError');
  });

  it('refuses plain http without allowHttpServers, even for a listed host', async () => {
    const error = await clientFetch(options([`127.0.0.1:${server.port}`], false))(
      `http://127.0.0.1:${server.port}/`,
    ).catch((e: unknown) => e);
    expect(nameOf(error)).toBe('FetchRequestError');
    expect(server.connections).toBe(0);
  });

  it('with allowHttpServers alone (no private hosts listed), reaches no loopback address', async () => {
    const error = await clientFetch(options([]))(`http://127.0.0.1:${server.port}/`).catch(
      (e: unknown) => e,
    );
    expect(nameOf(error)).toBe('FetchRequestError');
    expect(server.connections).toBe(0);
  });
});
