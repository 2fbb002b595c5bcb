import { lookup as dnsLookup } from 'node:dns';
import type { LookupFunction } from 'node:net';
import {
  checkForbiddenDomainNamePolicy,
  checkHostHeaderPolicy,
  checkProtocolPolicy,
  checkUnicastPolicy,
  DEFAULT_FORBIDDEN_DOMAIN_NAMES,
  fetchMaxSizeProcessor,
  FetchRequestError,
  type ProtocolConfig,
  safeDispatchFetchWrap,
  timedFetch,
  unicastLookup,
} from '@atproto-labs/fetch-node';

/** Responses larger than this are refused (as `@atproto-labs/fetch-node` does by default). */
const RESPONSE_MAX_BYTES = 512 * 1024;

/**
 * A private host the options allow the OAuth client to reach: a host name or IP literal
 * (IPv6 in brackets, lowercase) and, when given, the only port allowed on it.
 * @internal
 */
export interface PrivateHost {
  readonly hostname: string;
  readonly port: string | undefined;
}

/**
 * Parses an entry of `dangerouslyAllowPrivateHosts`: `host`, `host:port`, `1.2.3.4:port` or
 * `[::1]:port`. Anything else (a scheme, a path, a wildcard, credentials) is refused.
 * @internal
 */
export function parsePrivateHost(entry: unknown): PrivateHost | undefined {
  if (typeof entry !== 'string' || !/^[A-Za-z0-9.:[\]-]{1,260}$/.test(entry)) return undefined;
  if (!URL.canParse(`http://${entry}`)) return undefined;
  const url = new URL(`http://${entry}`);
  // The URL parser accepts more than a bare host[:port]; what it gives back must be exactly
  // what was written (no path, no normalisation of a surprising form).
  const written = entry.toLowerCase();
  if (url.host !== written && url.host !== written.replace(/:80$/, '')) return undefined;
  if (!url.hostname) return undefined;
  return { hostname: url.hostname, port: /:\d+$/.test(entry) ? entry.split(':').pop() : undefined };
}

/** What the outbound fetch allows. @internal */
export interface OutboundFetchPolicy {
  /** Plain-http authorization servers and PDSes allowed (tests, a local PDS). */
  readonly allowHttp: boolean;
  /** Private hosts that may be reached (loopback, LAN); every other private address is refused. */
  readonly privateHosts: readonly PrivateHost[];
  /** Time limit of one request, redirects included. */
  readonly timeoutMs: number;
  /**
   * Called with the request just before it leaves the process; throwing aborts it (the
   * error reaches the caller as is). The module uses it to refuse a token refresh whose
   * session lock could expire before the answer comes back.
   */
  readonly beforeSend?: (request: Request) => void | Promise<void>;
}

/**
 * The `fetch` the OAuth client uses for everything it sends: identity resolution, server
 * metadata, PAR, token and revocation requests, and the PDS calls of a session.
 *
 * Login input is user-controlled (a handle, a DID, a server URL) and a DID document names
 * the PDS: without care, anyone could make this backend send requests into its internal
 * network (SSRF). So:
 * - every request, **and every redirect hop**, is checked against one URL policy before any
 *   connection is made: https (http only with `allowHttp`), no IP literals, no forbidden
 *   domains, no non-unicast IP; DNS answers are checked at connect time (a public name
 *   resolving to 127.0.0.1 is refused). Private hosts are reachable only when listed in
 *   `privateHosts`, with their port;
 * - a request that carries client credentials or tokens (any non-GET request outside
 *   `/xrpc/`: PAR, token, revocation) never follows a redirect: it fails instead (a 307
 *   would re-send its body elsewhere). PDS calls (`/xrpc/…`) and metadata GETs follow
 *   redirects, each hop checked;
 * - a refused or failed request reaches the OAuth client as a `FetchRequestError`, never a
 *   bare `TypeError`: during a refresh the client deletes the session on a `TypeError`;
 * - every request has a time limit (a hung server must not hold the session lock), and
 *   responses are capped in size.
 *
 * Why not `safeFetchWrap` from `@atproto-labs/fetch-node` as is: its private-network switch
 * is all or nothing (a local test PDS would open every private address), and it follows the
 * redirect mode of the Request it is given. This composes the same upstream parts (the
 * per-hop dispatcher guard, the unicast DNS lookup, the URL policy checks, the timeout and
 * size limits) with an allow-list.
 * `globalThis.fetch` is looked up at call time, so instrumentation installed later applies.
 * @internal
 */
export function createOutboundFetch(policy: OutboundFetchPolicy): typeof globalThis.fetch {
  const protocols: ProtocolConfig = {
    'https:': { allowCustomPort: true },
    'http:': policy.allowHttp && { allowCustomPort: true },
  };
  const forbidden = new Set(DEFAULT_FORBIDDEN_DOMAIN_NAMES);
  const listedNames = new Set(policy.privateHosts.map((h) => h.hostname));
  const isListed = (url: URL) => {
    const port = url.port || (url.protocol === 'https:' ? '443' : '80');
    return policy.privateHosts.some(
      (h) => h.hostname === url.hostname && (h.port === undefined || h.port === port),
    );
  };
  const checkUrl = (url: URL): string | undefined =>
    checkProtocolPolicy(url, protocols) ??
    // A listed host name on a port the list does not name: without this, the generic checks
    // below would pass it as any public name, and the lookup would resolve it.
    (listedNames.has(url.hostname) && !isListed(url)
      ? 'Port not allowed for this private host'
      : undefined) ??
    (isListed(url) ? undefined : checkHostHeaderPolicy(url)) ??
    checkForbiddenDomainNamePolicy(url, forbidden) ??
    (isListed(url) ? undefined : checkUnicastPolicy(url));
  // At connect time only the host name is known: a listed name resolves as usual (its port
  // was checked by checkUrl, which runs first on every hop); any other name must resolve to
  // unicast addresses only.
  const lookup: LookupFunction = (hostname, options, callback) =>
    listedNames.has(hostname.toLowerCase())
      ? dnsLookup(hostname, options, callback)
      : unicastLookup(hostname, options, callback);

  const send = timedFetch(
    policy.timeoutMs,
    safeDispatchFetchWrap({ fetch: callGlobalFetch, checkUrl, lookup }),
  );
  const limitSize = fetchMaxSizeProcessor(RESPONSE_MAX_BYTES);

  return async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    let request: Request;
    try {
      request = input instanceof Request && !init ? input : new Request(input, init);
    } catch (error) {
      // e.g. a URL with credentials: a TypeError from the constructor, which must not reach
      // the OAuth client as such (see above). No Request exists: a placeholder stands in.
      throw new FetchRequestError(
        new Request('about:blank'),
        400,
        'Request refused: invalid request',
        {
          cause: error,
        },
      );
    }
    // Checked here as well as per hop (by the dispatcher): here the refusal carries the
    // caller's Request and happens before any body is read.
    const reason = checkUrl(new URL(request.url));
    if (reason) {
      await request.body?.cancel();
      throw new FetchRequestError(request, 400, `Request refused: ${reason}`);
    }
    if (request.redirect === 'follow' && carriesCredentials(request)) {
      request = new Request(request, { redirect: 'error' });
    }
    await policy.beforeSend?.(request);
    try {
      return await limitSize(await send(request));
    } catch (error) {
      // undici reports a refused hop, an unexpected redirect and network failures as
      // `TypeError: fetch failed`; see above for why it must not reach the client as such.
      // By name: Node's fetch may throw from another realm than this module's (VM contexts).
      if ((error as { name?: unknown } | null)?.name === 'TypeError') {
        throw FetchRequestError.from(request, error);
      }
      throw error;
    }
  };
}

/**
 * Requests that must not follow redirects: the OAuth client's POSTs to the authorization
 * server (PAR, token, revocation), which carry a client assertion and codes or tokens.
 * PDS calls are XRPC (`/xrpc/<nsid>`) and keep following redirects, checked per hop.
 */
function carriesCredentials(request: Request): boolean {
  if (request.method === 'GET' || request.method === 'HEAD') return false;
  return !new URL(request.url).pathname.startsWith('/xrpc/');
}

/**
 * `globalThis.fetch`, looked up at call time. A `Request` input is passed on as URL + init:
 * re-wrapping a Request that has a body (`fetch(request, init)`, as the wrappers above do to
 * add a signal or a dispatcher) trips undici's "Request object that has already been used"
 * check under some runtimes (seen under Jest's VM modules), so its parts are copied instead.
 */
async function callGlobalFetch(
  input: string | URL | Request,
  init?: RequestInit,
): Promise<Response> {
  if (!(input instanceof Request)) return globalThis.fetch(input, init);
  const body =
    input.method === 'GET' || input.method === 'HEAD' ? undefined : await input.arrayBuffer();
  const signal = init?.signal ? AbortSignal.any([input.signal, init.signal]) : input.signal;
  return globalThis.fetch(input.url, {
    method: input.method,
    headers: input.headers,
    redirect: input.redirect,
    ...init,
    body,
    signal,
  });
}
