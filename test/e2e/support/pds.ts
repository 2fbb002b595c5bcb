/**
 * In-process AT Protocol authorization server for e2e tests: an in-memory PLC directory plus a
 * real `@atproto/pds` (with its OAuth provider), a scripted sign-in + consent that needs no
 * browser, and a `globalThis.fetch` forwarder so the PDS can load client metadata served by a
 * local plain-HTTP listener under a made-up https origin.
 *
 * Recipe and the reasons behind each setting: docs/developers.md, "The local PDS".
 * @internal
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import type { PDS, ServerEnvironment } from '@atproto/pds';
import { request } from 'undici';
import { CookieJar } from './cookie-jar.js';

/** One HTTP request that reached an OAuth endpoint of the PDS. */
export interface OAuthEndpointRequest {
  /** `grant_type` of a token request (`authorization_code`, `refresh_token`); set once the body has arrived. */
  grantType: string | undefined;
  /** `Date.now()` when the request reached the PDS listener (before any configured delay). */
  at: number;
  /** Response status, set when the response has been sent (400 e.g. for a `use_dpop_nonce` retry). */
  status: number | undefined;
  /**
   * Status the PDS answered with, set as soon as its handler has finished, before any
   * response delay (see `setTokenResponseDelay`): set while `status` is not means the
   * answer is being held back; neither set means the PDS has not handled the request.
   */
  answeredStatus?: number;
  /** `error` of a JSON error answer (`use_dpop_nonce`, `invalid_grant`, ...). */
  error?: string;
  /** `error_description` of a JSON error answer (e.g. `Refresh token replayed`). */
  errorDescription?: string;
  /** {@link refreshTokenHash} of the refresh token the client presented (refresh requests). */
  presentedRefreshToken?: string;
  /** {@link refreshTokenHash} of the refresh token in a successful answer. */
  issuedRefreshToken?: string;
  /** Whether the request's DPoP proof carried a server nonce. */
  dpopNonce?: boolean;
}

/**
 * A short, non-reversible name for a refresh token (SHA-256, base64url, 16 chars), so that
 * tests can follow tokens across processes without handling them.
 */
export function refreshTokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('base64url').slice(0, 16);
}

export interface TestPdsTimings {
  /** Time spent in `import('@atproto/pds')` + `import('@did-plc/server')` (cached after the first call). */
  importMs: number;
  /** Time from the start of PLC to the PDS listening. */
  bootMs: number;
}

export interface TestAccount {
  did: string;
  handle: string;
  password: string;
  email: string;
}

export interface TestPds {
  /** The PDS origin and OAuth issuer, `http://localhost:PORT`. */
  url: string;
  /** The in-memory PLC directory, `http://127.0.0.1:PORT`. */
  plcUrl: string;
  /** The underlying server, for tests that need to reach deeper. */
  pds: PDS;
  timings: TestPdsTimings;
  /** Every `POST /oauth/token` that reached the PDS, in arrival order. Live array. */
  tokenRequests: OAuthEndpointRequest[];
  /** Every `POST /oauth/revoke` that reached the PDS, in arrival order. Live array. */
  revokeRequests: OAuthEndpointRequest[];
  /** Delay every subsequent `POST /oauth/token` by `ms` before the PDS handles it (0 = off). */
  setTokenDelay(ms: number): void;
  /**
   * Hold every subsequent answer of `POST /oauth/token` for `ms` after the PDS has handled
   * the request (and, for a refresh, already rotated the token) before sending it (0 = off).
   */
  setTokenResponseDelay(ms: number): void;
  /** Delay every subsequent `POST /oauth/revoke` by `ms` before the PDS handles it (0 = off). */
  setRevokeDelay(ms: number): void;
  /** Empties `tokenRequests` and `revokeRequests` (same array objects). */
  resetRequestLog(): void;
  /** Creates an account with handle `handle` (must end in `.test`). */
  createAccount(handle: string, password?: string): Promise<TestAccount>;
  /** Stops PDS and PLC and removes the temporary data directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartTestPdsOptions {
  /** Extra or overriding PDS environment settings (not `port`: use the option below). */
  env?: Partial<ServerEnvironment>;
  /** Port of the PDS (the issuer is `http://localhost:PORT`). @default a free port */
  port?: number;
  /** Port of the PLC directory. @default a free port */
  plcPort?: number;
}

/** Starts PLC (in memory) and a PDS on a free localhost port. Call `stop()` in `afterAll`. */
export async function startTestPds(options: StartTestPdsOptions = {}): Promise<TestPds> {
  const importStart = performance.now();
  const [{ PDS: PdsClass }, plcModule, { Secp256k1Keypair }, { AtpAgent }] = await Promise.all([
    import('@atproto/pds'),
    import('@did-plc/server'),
    import('@atproto/crypto'),
    import('@atproto/api'),
  ]);
  const importMs = performance.now() - importStart;

  const bootStart = performance.now();
  const dataDirectory = await mkdtemp(join(tmpdir(), 'e2e-pds-'));
  // @did-plc/server is CommonJS; its named exports are what Node's CJS interop exposes.
  const plc = plcModule.PlcServer.create({
    db: plcModule.Database.mock(),
    port: options.plcPort ?? 0,
  });
  let pds: PDS | undefined;
  try {
    const plcServer = await plc.start();
    const plcUrl = `http://127.0.0.1:${(plcServer.address() as AddressInfo).port}`;

    const rotationKey = await Secp256k1Keypair.create({ exportable: true });
    const recoveryKey = await Secp256k1Keypair.create();
    // The issuer URL is derived from `port` (`http://localhost:PORT`), so port 0 cannot be used.
    const port = options.port ?? (await findFreePort());
    pds = await PdsClass.fromEnv({
      devMode: true,
      dataDirectory,
      blobstoreDiskLocation: join(dataDirectory, 'blobs'),
      didPlcUrl: plcUrl,
      plcRotationKeyK256PrivateKeyHex: Buffer.from(await rotationKey.export()).toString('hex'),
      recoveryDidKey: recoveryKey.did(),
      serviceHandleDomains: ['.test'],
      inviteRequired: false,
      disableSsrfProtection: true,
      jwtSecret: randomBytes(32).toString('hex'),
      dpopSecret: randomBytes(32).toString('hex'),
      adminPassword: randomBytes(16).toString('hex'),
      bskyAppViewUrl: 'https://appview.invalid',
      bskyAppViewDid: 'did:example:invalid',
      modServiceUrl: 'https://moderation.invalid',
      modServiceDid: 'did:example:invalid',
      ...options.env,
      // Last: the issuer URL (below) is derived from it.
      port,
    });
    const server = await pds.start();
    const bootMs = performance.now() - bootStart;

    const tokenRequests: OAuthEndpointRequest[] = [];
    const revokeRequests: OAuthEndpointRequest[] = [];
    let tokenDelayMs = 0;
    let tokenResponseDelayMs = 0;
    let revokeDelayMs = 0;
    instrumentOAuthEndpoints(server, {
      token: tokenRequests,
      revoke: revokeRequests,
      tokenDelayMs: () => tokenDelayMs,
      tokenResponseDelayMs: () => tokenResponseDelayMs,
      revokeDelayMs: () => revokeDelayMs,
    });

    const url = `http://localhost:${port}`;
    const startedPds = pds;
    let stopped: Promise<void> | undefined;
    return {
      url,
      plcUrl,
      pds: startedPds,
      timings: { importMs, bootMs },
      tokenRequests,
      revokeRequests,
      setTokenDelay(ms) {
        tokenDelayMs = ms;
      },
      setTokenResponseDelay(ms) {
        tokenResponseDelayMs = ms;
      },
      setRevokeDelay(ms) {
        revokeDelayMs = ms;
      },
      resetRequestLog() {
        tokenRequests.length = 0;
        revokeRequests.length = 0;
      },
      async createAccount(handle, password = `pw-${randomBytes(8).toString('hex')}`) {
        const email = `${handle.split('.')[0] ?? 'user'}-${randomBytes(4).toString('hex')}@example.com`;
        const agent = new AtpAgent({ service: url });
        const res = await agent.createAccount({ handle, email, password });
        return { did: res.data.did, handle: res.data.handle, password, email };
      },
      stop() {
        stopped ??= shutdown(startedPds, plc, dataDirectory);
        return stopped;
      },
    };
  } catch (err) {
    await shutdown(pds, plc, dataDirectory).catch(() => undefined);
    throw err;
  }
}

async function shutdown(
  pds: PDS | undefined,
  plc: { destroy(): Promise<void>; server?: Server },
  dataDirectory: string,
): Promise<void> {
  try {
    await pds?.destroy();
  } finally {
    try {
      if (plc.server) await plc.destroy();
    } finally {
      await rm(dataDirectory, { recursive: true, force: true });
    }
  }
}

function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createNetServer();
    probe.unref();
    probe.once('error', reject);
    probe.listen(0, 'localhost', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

interface OAuthEndpointLog {
  token: OAuthEndpointRequest[];
  revoke: OAuthEndpointRequest[];
  tokenDelayMs: () => number;
  tokenResponseDelayMs: () => number;
  revokeDelayMs: () => number;
}

/**
 * Puts a recorder in front of the PDS express app, at the `http.Server` 'request' listener
 * level, so nothing inside the PDS changes. The body is observed, not consumed: the HTTP
 * parser delivers body chunks with `req.push()`, and the 'request' event fires (synchronously,
 * from the headers-complete callback) before any chunk is pushed, so wrapping `push` on the
 * instance sees every chunk while the real handler still reads the stream normally.
 */
function instrumentOAuthEndpoints(server: Server, log: OAuthEndpointLog): void {
  const listeners = server.listeners('request') as RequestListener[];
  server.removeAllListeners('request');
  const dispatch = (req: IncomingMessage, res: ServerResponse): void => {
    for (const listener of listeners) listener.call(server, req, res);
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?', 1)[0];
    const list =
      req.method !== 'POST'
        ? undefined
        : path === '/oauth/token'
          ? log.token
          : path === '/oauth/revoke'
            ? log.revoke
            : undefined;
    if (!list) return dispatch(req, res);

    const entry: OAuthEndpointRequest = { grantType: undefined, at: Date.now(), status: undefined };
    list.push(entry);
    entry.dpopNonce = hasDpopNonce(req.headers.dpop);
    tapBody(req, (body) => {
      const params = readParams(body, req.headers['content-type']);
      entry.grantType = params?.grant_type;
      if (params?.refresh_token)
        entry.presentedRefreshToken = refreshTokenHash(params.refresh_token);
    });
    tapResponse(res, list === log.token ? log.tokenResponseDelayMs() : 0, (status, body) => {
      entry.answeredStatus = status;
      const json = readJsonAnswer(body, res.getHeader('content-encoding'));
      if (typeof json?.error === 'string') entry.error = json.error;
      if (typeof json?.error_description === 'string')
        entry.errorDescription = json.error_description;
      if (typeof json?.refresh_token === 'string')
        entry.issuedRefreshToken = refreshTokenHash(json.refresh_token);
    });
    res.once('finish', () => {
      entry.status = res.statusCode;
    });
    const delay = list === log.token ? log.tokenDelayMs() : log.revokeDelayMs();
    if (delay > 0) setTimeout(() => dispatch(req, res), delay);
    else dispatch(req, res);
  });
}

function tapBody(req: IncomingMessage, onEnd: (body: Buffer) => void): void {
  const chunks: Buffer[] = [];
  const push = req.push.bind(req);
  req.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk === null) onEnd(Buffer.concat(chunks));
    else if (typeof chunk === 'string') chunks.push(Buffer.from(chunk, encoding));
    else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk));
    return push(chunk, encoding);
  };
}

function readParams(
  body: Buffer,
  contentType: string | undefined,
): Record<string, string | undefined> | undefined {
  const text = body.toString('utf8');
  try {
    if (contentType?.includes('json')) {
      const json: unknown = JSON.parse(text);
      if (typeof json !== 'object' || json === null) return undefined;
      const out: Record<string, string | undefined> = {};
      for (const [k, v] of Object.entries(json)) if (typeof v === 'string') out[k] = v;
      return out;
    }
    return Object.fromEntries(new URLSearchParams(text));
  } catch {
    return undefined;
  }
}

/**
 * Sees the body the PDS answers with (after its compression middleware) and, with
 * `holdMs > 0`, holds the whole answer back for that long once the handler has ended it.
 */
function tapResponse(
  res: ServerResponse,
  holdMs: number,
  onAnswer: (status: number, body: Buffer) => void,
): void {
  const chunks: Buffer[] = [];
  const held: Array<() => void> = [];
  const write = res.write.bind(res) as (...args: unknown[]) => boolean;
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  const keep = (chunk: unknown, encoding: unknown): void => {
    if (typeof chunk === 'string')
      chunks.push(
        Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'),
      );
    else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk));
  };
  res.write = ((...args: unknown[]) => {
    keep(args[0], args[1]);
    if (holdMs <= 0) return write(...args);
    held.push(() => void write(...args));
    return true;
  }) as typeof res.write;
  res.end = ((...args: unknown[]) => {
    if (typeof args[0] !== 'function') keep(args[0], args[1]);
    try {
      onAnswer(res.statusCode, Buffer.concat(chunks));
    } catch {
      // An unreadable answer is simply not described.
    }
    if (holdMs <= 0) return end(...args);
    setTimeout(() => {
      for (const flush of held) flush();
      end(...args);
    }, holdMs);
    return res;
  }) as typeof res.end;
}

function readJsonAnswer(
  body: Buffer,
  encoding: ReturnType<ServerResponse['getHeader']>,
): Record<string, unknown> | undefined {
  try {
    const coding = String(encoding ?? '').toLowerCase();
    const raw =
      coding === 'gzip'
        ? gunzipSync(body)
        : coding === 'br'
          ? brotliDecompressSync(body)
          : coding === 'deflate'
            ? inflateSync(body)
            : body;
    const json: unknown = JSON.parse(raw.toString('utf8'));
    return typeof json === 'object' && json !== null
      ? (json as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function hasDpopNonce(proof: string | string[] | undefined): boolean {
  const payload = typeof proof === 'string' ? proof.split('.')[1] : undefined;
  if (!payload) return false;
  try {
    const claims: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    return typeof claims === 'object' && claims !== null && 'nonce' in claims;
  } catch {
    return false;
  }
}

// --- signing in without a browser ----------------------------------------------------------

export interface SignInCredentials {
  /** Handle, email or DID. */
  username: string;
  password: string;
}

export interface SignInResult {
  /** `code`, `state`, `iss` (and any other redirect params) for the client's callback. */
  callbackParams: URLSearchParams;
  /** The PDS's `/oauth/authorize/redirect?...` URL returned by the consent call. */
  redirectUrl: URL;
  /** DID of the account that signed in. */
  did: string;
  /** The PDS session cookies (reuse for a second authorization on the same "device"). */
  jar: CookieJar;
}

/**
 * Does what the PDS's authorization page does in a browser: loads the authorization URL, signs
 * in through the provider's internal UI API and consents. Uses `undici.request`, because
 * `fetch()` overrides the `sec-fetch-*` headers the provider checks.
 */
export async function signInAndConsent(
  authorizeUrl: URL | string,
  credentials: SignInCredentials,
  options: { jar?: CookieJar; scope?: string } = {},
): Promise<SignInResult> {
  const authUrl = new URL(authorizeUrl);
  const issuer = authUrl.origin;
  const jar = options.jar ?? new CookieJar();

  const page = await request(authUrl, {
    method: 'GET',
    headers: {
      accept: 'text/html',
      'sec-fetch-mode': 'navigate',
      'sec-fetch-dest': 'document',
      'sec-fetch-site': 'cross-site',
      ...(jar.header() ? { cookie: jar.header() } : {}),
    },
  });
  const pageText = await page.body.text();
  if (page.statusCode !== 200) {
    throw new Error(
      `GET ${authUrl.pathname} answered ${page.statusCode}: ${pageText.slice(0, 300)}`,
    );
  }
  jar.store(page.headers['set-cookie']);

  const signIn = await postApi(issuer, authUrl, jar, 'sign-in', {
    locale: 'en',
    username: credentials.username,
    password: credentials.password,
    remember: true,
  });
  const did = readPath(signIn, ['account', 'did']);
  if (typeof did !== 'string') {
    throw new Error(`sign-in answer has no account.did: ${JSON.stringify(signIn)}`);
  }

  const consent = await postApi(issuer, authUrl, jar, 'consent', {
    did,
    ...(options.scope ? { scope: options.scope } : {}),
  });
  const url = readPath(consent, ['url']);
  if (typeof url !== 'string') {
    throw new Error(`consent answer has no url: ${JSON.stringify(consent)}`);
  }
  const redirectUrl = new URL(url);
  const callbackParams = new URLSearchParams();
  for (const [key, value] of redirectUrl.searchParams) {
    if (key !== 'redirect_mode' && key !== 'redirect_uri') callbackParams.append(key, value);
  }
  return { callbackParams, redirectUrl, did, jar };
}

async function postApi(
  issuer: string,
  referer: URL,
  jar: CookieJar,
  endpoint: string,
  body: Record<string, unknown>,
): Promise<unknown> {
  const csrf = jar.get('csrf-token');
  if (!csrf) throw new Error('no csrf-token cookie: did the authorization page load?');
  const res = await request(`${issuer}/@atproto/oauth-provider/~api/${endpoint}`, {
    method: 'POST',
    headers: {
      accept: 'application/json',
      'content-type': 'application/json',
      'sec-fetch-mode': 'same-origin',
      'sec-fetch-site': 'same-origin',
      'sec-fetch-dest': 'empty',
      origin: issuer,
      referer: referer.href,
      'x-csrf-token': csrf,
      cookie: jar.header(),
    },
    body: JSON.stringify(body),
  });
  jar.store(res.headers['set-cookie']);
  const json: unknown = await res.body.json();
  if (res.statusCode !== 200) {
    throw new Error(`${endpoint} answered ${res.statusCode}: ${JSON.stringify(json)}`);
  }
  return json;
}

function readPath(value: unknown, path: string[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

// --- serving a made-up https origin from a local listener ------------------------------------

/**
 * Makes `globalThis.fetch` answer requests for `httpsOrigin` (e.g. `https://app.e2e.internal`)
 * from `localOrigin` (e.g. `http://127.0.0.1:PORT`), keeping path and query. The PDS reads
 * `globalThis.fetch` at call time, so this works before or after it starts. Adds
 * `x-forwarded-host` / `x-forwarded-proto` so the local app can tell the public origin.
 * Returns `restore`; restoring out of order is safe (the wrapper then just passes through).
 */
export function forwardOriginToLocal(httpsOrigin: string, localOrigin: string): () => void {
  const from = new URL(httpsOrigin);
  const to = new URL(localOrigin);
  const previous = globalThis.fetch;
  let active = true;
  const wrapped: typeof fetch = async (input, init) => {
    if (!active) return previous(input, init);
    const original = new Request(input, init);
    const url = new URL(original.url);
    if (url.origin !== from.origin) return previous(input, init);
    const target = new URL(url.pathname + url.search, to);
    const headers = new Headers(original.headers);
    headers.set('x-forwarded-host', from.host);
    headers.set('x-forwarded-proto', from.protocol.slice(0, -1));
    return previous(
      new Request(target, {
        method: original.method,
        headers,
        body: original.body,
        redirect: original.redirect,
        signal: original.signal,
        ...(original.body ? { duplex: 'half' } : {}),
      }),
    );
  };
  globalThis.fetch = wrapped;
  return () => {
    active = false;
    if (globalThis.fetch === wrapped) globalThis.fetch = previous;
  };
}
