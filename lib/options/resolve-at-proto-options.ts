import {
  buildAtprotoLoopbackClientId,
  JoseKey,
  type Key,
  type OAuthClientMetadataInput,
} from '@atproto/oauth-client-node';
import { isAtprotoOauthScope } from '@atproto/oauth-scopes';
import { z } from 'zod';
import { KeyRing } from '../crypto/key-ring.js';
import { parsePrivateHost } from '../oauth/outbound-fetch.js';
import { resolveApiKeyOptions } from '../api-keys/api-key-options.js';
import { resolveNativeOptions } from '../native/native-options.js';
import { resolveServiceAuthOptions } from '../service-auth/service-auth-options.js';
import { resolveBotOptions } from '../bots/bot-options.js';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import { DeclaredScopes } from '../scopes/oauth-scopes.js';
import type {
  AtProtoModuleExtras,
  AtProtoModuleOptions,
  AtProtoSigningKeyInput,
} from './at-proto-options.interface.js';
import type { ResolvedAtProtoOptions } from './resolved-options.js';

const DAY = 86_400_000;
/** @internal */
export const DEFAULTS = {
  clientName: 'AT Protocol app',
  scope: 'atproto transition:generic',
  routePrefix: 'oauth',
  cookieName: 'atproto_session',
  appSessionIdleTtl: 7 * DAY,
  appSessionAbsoluteTtl: 30 * DAY,
  oauthSessionRetention: 90 * DAY,
  stateTtl: 30 * 60_000,
  cleanupInterval: 5 * 60_000,
  cleanupBatchSize: 1000,
  revokedGrace: DAY,
} as const;

const duration = (what: string) =>
  z
    .number({ error: `${what} must be a number of milliseconds` })
    .int({ error: `${what} must be a whole number of milliseconds` })
    .positive({ error: `${what} must be positive` })
    .optional();
const httpsUrl = (what: string) =>
  z
    .string({ error: `${what} must be a string` })
    .refine((v) => URL.canParse(v) && new URL(v).protocol === 'https:', {
      error: `${what} must be an absolute https URL`,
    })
    .optional();
const localPath = (what: string) =>
  z
    .string({ error: `${what} must be a string` })
    .refine((v) => v.startsWith('/') && !v.startsWith('//') && !v.includes('\\'), {
      error: `${what} must be a path on this app starting with "/" (not "//")`,
    })
    .optional();

const optionsSchema = z.object({
  publicUrl: z.string({
    error: (iss) =>
      iss.input === undefined
        ? 'publicUrl is required: set it to the URL where this backend is reachable, e.g. https://app.example.com (or http://127.0.0.1:3000 to try it locally)'
        : 'publicUrl must be a string URL',
  }),
  clientName: z.string({ error: 'clientName must be a string' }).min(1).max(200).optional(),
  clientUri: httpsUrl('clientUri'),
  logoUri: httpsUrl('logoUri'),
  tosUri: httpsUrl('tosUri'),
  policyUri: httpsUrl('policyUri'),
  scope: z
    .string({ error: 'scope must be a string' })
    .refine((s) => s.split(' ').includes('atproto'), {
      error: 'scope must contain "atproto" (e.g. "atproto transition:generic")',
    })
    .optional(),
  optionalScopes: z
    .array(
      z.string().refine((t) => isAtprotoOauthScope(t), {
        error: (iss) =>
          `optionalScopes: "${String(iss.input).slice(0, 80)}" is not an AT Protocol OAuth scope (repo:…, rpc:…, blob:…, account:…, identity:…, include:…, transition:…), one per entry`,
      }),
      { error: 'optionalScopes must be an array of scope strings' },
    )
    .max(100, { error: 'optionalScopes: at most 100 scopes' })
    .optional(),
  keys: z
    .array(z.union([z.string(), z.record(z.string(), z.unknown())]), {
      error:
        'keys must be an array of private ES256 JWKs (objects or JSON strings) or { kid, pem }',
    })
    .optional(),
  activeSigningKid: z
    .string({ error: 'activeSigningKid must be a string (a kid of keys)' })
    .optional(),
  encryption: z.unknown(),
  cookie: z
    .object({
      name: z
        .string()
        .regex(/^[A-Za-z0-9_-]{1,64}$/, { error: 'cookie.name must be 1-64 of A-Z a-z 0-9 _ -' })
        .optional(),
      domain: z.string().min(1).optional(),
      sameSite: z
        .enum(['lax', 'none'], { error: 'cookie.sameSite must be "lax" or "none"' })
        .optional(),
    })
    .optional(),
  appSession: z
    .object({
      idleTtl: duration('appSession.idleTtl'),
      absoluteTtl: duration('appSession.absoluteTtl'),
      cacheTtl: z
        .number({ error: 'appSession.cacheTtl must be a number of milliseconds' })
        .int()
        .min(0, { error: 'appSession.cacheTtl must be >= 0' })
        .max(60_000, {
          error:
            'appSession.cacheTtl must be at most 60000 ms: it is how long a logout on another instance can go unnoticed here',
        })
        .optional(),
      cacheMaxEntries: z
        .number({ error: 'appSession.cacheMaxEntries must be a number of entries' })
        .int()
        .min(1, { error: 'appSession.cacheMaxEntries must be at least 1' })
        .max(10_000_000, { error: 'appSession.cacheMaxEntries must be at most 10000000' })
        .optional(),
      invalidatedCacheTtl: z
        .number({ error: 'appSession.invalidatedCacheTtl must be a number of milliseconds' })
        .int({ error: 'appSession.invalidatedCacheTtl must be a whole number of milliseconds' })
        .min(0, { error: 'appSession.invalidatedCacheTtl must be >= 0' })
        .max(86_400_000, {
          error: 'appSession.invalidatedCacheTtl must be at most 86400000 ms (a day)',
        })
        .optional(),
    })
    .optional(),
  oauthSessionRetention: duration('oauthSessionRetention'),
  stateTtl: duration('stateTtl'),
  afterLoginPath: localPath('afterLoginPath'),
  afterLogoutPath: localPath('afterLogoutPath'),
  storage: z
    .enum(['typeorm', 'memory'], { error: 'storage must be "typeorm" or "memory"' })
    .optional(),
  httpTimeout: duration('httpTimeout').refine((v) => v === undefined || v <= 30_000, {
    error:
      'httpTimeout must be at most 30000 ms: a refresh holds the session lock for up to that long, and other requests of the user wait for it',
  }),
  storeRetry: z
    .object({
      maxAttempts: z.number().int().min(1).optional(),
      baseDelayMs: z.number().min(0).optional(),
      maxDelayMs: z.number().min(0).optional(),
      maxElapsedMs: z.number().min(0).optional(),
    })
    .optional(),
  cleanup: z
    .object({
      enabled: z.boolean({ error: 'cleanup.enabled must be true or false' }).optional(),
      interval: duration('cleanup.interval'),
      batchSize: z
        .number()
        .int()
        .min(1, { error: 'cleanup.batchSize must be at least 1' })
        .max(10_000, {
          error:
            'cleanup.batchSize must be at most 10000 (one statement lists that many keys; drivers refuse more than 32766 or 65535 parameters)',
        })
        .optional(),
      revokedGrace: z
        .number()
        .int()
        .min(0, { error: 'cleanup.revokedGrace must be >= 0' })
        .optional(),
      revokeUnusedOAuthSessions: z
        .boolean({ error: 'cleanup.revokeUnusedOAuthSessions must be true or false' })
        .optional(),
    })
    .optional(),
  redis: z
    .string({ error: 'redis must be a redis:// or rediss:// URL' })
    .refine((v) => URL.canParse(v) && /^rediss?:$/.test(new URL(v).protocol), {
      error: 'redis must be a redis:// or rediss:// URL',
    })
    .optional(),
  redisStore: z.boolean({ error: 'redisStore must be true or false' }).optional(),
  redisKeyPrefix: z
    .string()
    .regex(/^[A-Za-z0-9:_.-]{1,64}$/, {
      error: 'redisKeyPrefix must be 1-64 of A-Z a-z 0-9 : _ . -',
    })
    .optional(),
  redisCaches: z.boolean({ error: 'redisCaches must be true or false' }).optional(),
  handleResolver: z
    .string()
    .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), {
      error: 'handleResolver must be an http(s) URL',
    })
    .optional(),
  plcDirectoryUrl: z
    .string()
    .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), {
      error: 'plcDirectoryUrl must be an http(s) URL',
    })
    .optional(),
  allowHttpServers: z.boolean().optional(),
  trustedOrigins: z
    .array(z.string(), { error: 'trustedOrigins must be an array of origins' })
    .optional(),
  native: z.unknown().optional(),
  apiKeys: z.unknown().optional(),
  serviceAuth: z.unknown().optional(),
  bots: z.unknown().optional(),
  credentials: z
    .object({
      allow: z
        .array(z.enum(['cookie', 'bearer', 'api-key']), {
          error: 'credentials.allow must be an array of "cookie", "bearer", "api-key"',
        })
        .optional(),
    })
    .optional(),
  dangerouslyAllowPrivateHosts: z
    .array(
      z.string().refine((v) => parsePrivateHost(v) !== undefined, {
        error:
          'must be a host or host:port, e.g. "localhost:2583" or "[::1]:2583" (no scheme, path or wildcard)',
      }),
      { error: 'dangerouslyAllowPrivateHosts must be an array of "host" or "host:port" strings' },
    )
    .optional(),
});

/**
 * Validates the module's options and fills in the defaults. Every problem is collected and
 * thrown at once as an {@link AtProtoConfigError}; messages never include key material.
 * @publicApi
 */
export async function resolveAtProtoOptions(
  input: AtProtoModuleOptions,
  extras: AtProtoModuleExtras = {},
): Promise<ResolvedAtProtoOptions> {
  const problems: string[] = [];
  const routePrefixInput = extras.routePrefix ?? DEFAULTS.routePrefix;
  if (
    typeof routePrefixInput !== 'string' ||
    !/^\/?[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*\/?$/.test(routePrefixInput)
  ) {
    problems.push('routePrefix must be a URL path such as "oauth" or "auth/atproto"');
  }
  if (!input || typeof input !== 'object') {
    throw new AtProtoConfigError([
      'options must be an object with at least publicUrl and encryption',
    ]);
  }
  const parsed = optionsSchema.safeParse(input);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const path = issue.path.join('.');
      problems.push(
        issue.message.startsWith(path) || !path ? issue.message : `${path}: ${issue.message}`,
      );
    }
  }

  // publicUrl decides the client mode.
  let publicUrl: URL | undefined;
  let clientMode: 'confidential' | 'loopback' = 'confidential';
  if (typeof input.publicUrl === 'string') {
    if (!URL.canParse(input.publicUrl)) {
      problems.push(
        `publicUrl "${input.publicUrl}" is not an absolute URL, e.g. https://app.example.com`,
      );
    } else {
      publicUrl = new URL(input.publicUrl);
      if (publicUrl.search || publicUrl.hash || publicUrl.username || publicUrl.password) {
        problems.push('publicUrl must not contain a query, a fragment or credentials');
      }
      if (publicUrl.protocol === 'http:') {
        if (publicUrl.hostname === '127.0.0.1' || publicUrl.hostname === '[::1]') {
          clientMode = 'loopback';
        } else if (publicUrl.hostname === 'localhost') {
          problems.push(
            `publicUrl uses "localhost": AT Protocol loopback clients must use the IP, e.g. http://127.0.0.1:${publicUrl.port || '3000'}`,
          );
        } else {
          problems.push(
            'publicUrl must be https (or http://127.0.0.1:<port> for local development): authorization servers refuse plain-http clients',
          );
        }
      } else if (publicUrl.protocol !== 'https:') {
        problems.push('publicUrl must be an https URL');
      }
    }
  }

  const cookieDomain = resolveCookieDomain(input.cookie?.domain, publicUrl, problems);
  problems.push(...KeyRing.validate(input.encryption as AtProtoModuleOptions['encryption']));
  if (input.redisStore && !input.redis) {
    problems.push('redisStore: true needs the redis option (a redis:// URL)');
  }
  if (input.cookie?.sameSite === 'none' && clientMode === 'loopback') {
    problems.push(
      'cookie.sameSite "none" needs an https publicUrl: browsers drop SameSite=None cookies without Secure',
    );
  }
  if (extras.bullmq && !input.redis) {
    problems.push('bullmq: true needs the redis option (a redis:// URL) for BullMQ to run on');
  }
  if (extras.bullmq && extras.isGlobal === false) {
    problems.push(
      'bullmq: true needs isGlobal: true (the BullMQ connection reads the module options)',
    );
  }

  const signingKeys: Key[] = [];
  if (clientMode === 'confidential') {
    if (!input.keys || input.keys.length === 0) {
      if (publicUrl) {
        problems.push(
          'keys is required with an https publicUrl (confidential client, private_key_jwt): add at least one private ES256 JWK with a "kid"',
        );
      }
    } else if (Array.isArray(input.keys)) {
      const kids = new Set<string>();
      for (const [i, raw] of input.keys.entries()) {
        const key = await importSigningKey(raw, `keys[${i}]`, problems);
        if (!key) continue;
        if (kids.has(key.kid as string)) {
          problems.push(`keys[${i}] repeats kid "${key.kid}": every key needs its own kid`);
        }
        kids.add(key.kid as string);
        signingKeys.push(key);
      }
      // The OAuth client binds a new session to the first key of its keyset: the active one
      // goes first, named explicitly (list order is easy to get wrong during a rotation).
      const active = input.activeSigningKid;
      if (active === undefined && input.keys.length > 1) {
        problems.push(
          `activeSigningKid is required with several keys: name the kid new sessions are bound to (one of ${[...kids].join(', ')})`,
        );
      } else if (typeof active === 'string' && signingKeys.length === input.keys.length) {
        const index = signingKeys.findIndex((k) => k.kid === active);
        if (index < 0) {
          // Echoed only when it looks like a kid: a key pasted here by mistake is not printed.
          // At most 40 characters, and never one of the keys' private parts (a JWK's `d` is
          // 43): a key id is short, key material is not.
          const secret = input.keys.some(
            (k) => typeof k === 'object' && k !== null && (k as { d?: unknown }).d === active,
          );
          const shown =
            /^[\w.:-]{1,40}$/.test(active) && !secret
              ? `"${active}"`
              : `(a value of ${active.length} characters)`;
          problems.push(
            `activeSigningKid ${shown} is not the kid of a key in keys (${[...kids].join(', ')})`,
          );
        } else {
          signingKeys.unshift(...signingKeys.splice(index, 1));
        }
      }
    }
  }

  const trustedOrigins = resolveTrustedOrigins(input, publicUrl, problems);
  const native = resolveNativeOptions(input.native, problems);
  const apiKeys = resolveApiKeyOptions(input.apiKeys, problems);
  const serviceAuth = resolveServiceAuthOptions(
    input.serviceAuth,
    problems,
    input.redis !== undefined,
    publicUrl,
  );
  const bots = resolveBotOptions(input.bots, problems);

  if (problems.length > 0 || !publicUrl) throw new AtProtoConfigError(problems);

  const base = publicUrl.href.replace(/\/+$/, '');
  const routePrefix = routePrefixInput.replace(/^\/+|\/+$/g, '');
  const route = (name: string) => `${base}/${routePrefix}/${name}`;
  const urls = {
    clientMetadata: route('client-metadata.json'),
    jwks: route('jwks.json'),
    login: route('login'),
    callback: route('callback'),
    logout: route('logout'),
  };
  const declaredScopes = new DeclaredScopes(
    input.scope ?? DEFAULTS.scope,
    input.optionalScopes ?? [],
  );
  // The client metadata declares every scope a login may ask for (the server refuses others).
  const scope = declaredScopes.metadataScope;
  const clientName = input.clientName ?? DEFAULTS.clientName;

  let clientMetadata: OAuthClientMetadataInput;
  if (clientMode === 'loopback') {
    clientMetadata = {
      client_id: buildAtprotoLoopbackClientId({ scope, redirect_uris: [urls.callback] }),
      client_name: clientName,
      redirect_uris: [urls.callback as `http://127.0.0.1${string}`],
      scope,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      dpop_bound_access_tokens: true,
    };
  } else {
    clientMetadata = {
      client_id: urls.clientMetadata,
      client_name: clientName,
      client_uri: input.clientUri ?? base,
      ...(input.logoUri ? { logo_uri: input.logoUri } : {}),
      ...(input.tosUri ? { tos_uri: input.tosUri } : {}),
      ...(input.policyUri ? { policy_uri: input.policyUri } : {}),
      redirect_uris: [urls.callback as `https://${string}`],
      scope,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      application_type: 'web',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      dpop_bound_access_tokens: true,
      jwks_uri: urls.jwks as `https://${string}`,
    };
  }

  const secure = publicUrl.protocol === 'https:';
  const cookieName = input.cookie?.name ?? DEFAULTS.cookieName;
  // `__Host-` makes the browser refuse the cookie unless it is Secure, Path=/ and has no
  // Domain: a sibling subdomain can then neither set nor shadow it.
  // With a Domain (shared with subdomains) `__Host-` is not allowed; `__Secure-` still
  // stops a sibling from planting a non-Secure cookie of the same name.
  const hostPrefix = !secure ? '' : cookieDomain ? '__Secure-' : '__Host-';
  return {
    publicUrl: base,
    origin: publicUrl.origin,
    clientMode,
    routePrefix,
    urls,
    clientMetadata,
    signingKeys,
    activeSigningKid: signingKeys[0]?.kid,
    keyRing: new KeyRing(input.encryption),
    scope: declaredScopes.base.join(' '),
    declaredScopes,
    cookie: {
      sessionName: `${hostPrefix}${cookieName}`,
      loginName: `${hostPrefix}${cookieName}_login`,
      secure,
      sameSite: input.cookie?.sameSite ?? 'lax',
      domain: cookieDomain,
    },
    appSession: {
      idleTtlMs: input.appSession?.idleTtl ?? DEFAULTS.appSessionIdleTtl,
      absoluteTtlMs: input.appSession?.absoluteTtl ?? DEFAULTS.appSessionAbsoluteTtl,
      cacheTtlMs: input.appSession?.cacheTtl ?? 2000,
      cacheMaxEntries: input.appSession?.cacheMaxEntries ?? 100_000,
      invalidatedCacheTtlMs: input.appSession?.invalidatedCacheTtl ?? 300_000,
    },
    oauthSessionRetentionMs: input.oauthSessionRetention ?? DEFAULTS.oauthSessionRetention,
    stateTtlMs: input.stateTtl ?? DEFAULTS.stateTtl,
    globalGuard: extras.globalGuard ?? true,
    afterLoginPath: input.afterLoginPath ?? '/',
    afterLogoutPath: input.afterLogoutPath ?? '/',
    storage: input.storage ?? 'typeorm',
    dataSourceName: extras.dataSourceName,
    httpTimeoutMs: input.httpTimeout ?? 10_000,
    storeRetry: input.storeRetry,
    cleanup: {
      enabled: input.cleanup?.enabled ?? process.env.NODE_ENV !== 'test',
      intervalMs: input.cleanup?.interval ?? DEFAULTS.cleanupInterval,
      batchSize: input.cleanup?.batchSize ?? DEFAULTS.cleanupBatchSize,
      revokedGraceMs: input.cleanup?.revokedGrace ?? DEFAULTS.revokedGrace,
      revokeUnusedOAuthSessions: input.cleanup?.revokeUnusedOAuthSessions ?? true,
    },
    redis: input.redis,
    redisStore: input.redisStore ?? false,
    redisKeyPrefix: input.redisKeyPrefix ?? 'atproto:',
    redisCaches: input.redisCaches ?? input.redis !== undefined,
    handleResolver: input.handleResolver,
    plcDirectoryUrl: input.plcDirectoryUrl,
    allowHttpServers: input.allowHttpServers ?? false,
    privateHosts: (input.dangerouslyAllowPrivateHosts ?? []).map((h) => h.toLowerCase()),
    native,
    apiKeys,
    serviceAuth,
    bots,
    credentialsAllow: input.credentials?.allow ?? ['cookie', 'bearer'],
    trustedOrigins,
  };
}

/**
 * `trustedOrigins`, checked: exact origins (no path, query, credentials or trailing slash),
 * https or a loopback IP with a port. One on another site than `publicUrl` only works with
 * `cookie.sameSite: 'none'`: browsers keep a Lax cookie off its requests.
 */
function resolveTrustedOrigins(
  input: AtProtoModuleOptions,
  publicUrl: URL | undefined,
  problems: string[],
): string[] {
  const origins: string[] = [];
  for (const [i, raw] of (input.trustedOrigins ?? []).entries()) {
    if (typeof raw !== 'string') continue; // the schema reports it
    const where = `trustedOrigins[${i}]`;
    const url = URL.canParse(raw) ? new URL(raw) : undefined;
    if (!url || url.origin !== raw) {
      problems.push(
        `${where} must be an exact origin such as "https://app.example.com" (scheme, host and port only)`,
      );
      continue;
    }
    const host = url.hostname.toLowerCase().replace(/\.$/, '');
    const local =
      host === '127.0.0.1' ||
      host === '[::1]' ||
      host === 'localhost' ||
      host.endsWith('.localhost');
    // A loopback origin is any local program or page on the user's machine: trusted only
    // while the backend itself runs on loopback (development).
    const devBackend = publicUrl?.hostname === '127.0.0.1' || publicUrl?.hostname === '[::1]';
    if (local && (!devBackend || host.includes('localhost'))) {
      problems.push(
        `${where} is a loopback or localhost origin: only http://127.0.0.1:<port> (or [::1]), and only while publicUrl is one too (development)`,
      );
      continue;
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && local)) {
      problems.push(`${where} must be https (or http://127.0.0.1:<port> in development)`);
      continue;
    }
    if (publicUrl && !sameSite(url, publicUrl) && input.cookie?.sameSite !== 'none') {
      problems.push(
        `${where} (${raw}) is on another site than publicUrl: its requests only carry the session cookie with cookie.sameSite: 'none' (or use the token pair of native apps)`,
      );
      continue;
    }
    origins.push(raw);
  }
  return origins;
}

/**
 * Whether two URLs are on the same site as browsers judge it for SameSite cookies: same
 * scheme, and the same host for an IP or the same last two labels of a name. (Without a
 * public-suffix list, two names under one suffix such as `co.uk` count as one site; the
 * cost is a boot that passes where the browser then keeps the cookie back: nothing opens.)
 */
function sameSite(a: URL, b: URL): boolean {
  if (a.protocol !== b.protocol) return false;
  const site = (host: string) =>
    /^[\d.]+$|^\[/.test(host) ? host : host.split('.').slice(-2).join('.');
  return site(a.hostname) === site(b.hostname);
}

/**
 * `cookie.domain`, checked: a browser silently drops a cookie whose Domain does not cover
 * the host that sets it, and the cookie library throws on a malformed one (every login would
 * answer 500), so both are refused at boot. It must be the publicUrl host or a parent of it
 * on label boundaries (`example.com` covers `app.example.com`, not `badexample.com`), never
 * an IP address or a single label. A leading dot is ignored, as browsers do.
 */
function resolveCookieDomain(
  raw: string | undefined,
  publicUrl: URL | undefined,
  problems: string[],
): string | undefined {
  if (typeof raw !== 'string' || raw === '') return undefined; // the schema reports those
  const domain = raw.replace(/^\./, '').toLowerCase();
  const host = publicUrl?.hostname.toLowerCase();
  const fail = (why: string) => {
    problems.push(
      `cookie.domain ${why}; leave it unset to keep cookies on ${host ?? 'the publicUrl host'} only`,
    );
    return undefined;
  };
  if (
    !/^[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(domain) ||
    domain.split('.').some((l) => !l || l.length > 63)
  ) {
    return fail('must be a domain name such as "example.com" (no scheme, port, path or wildcard)');
  }
  if (/^[0-9.]+$/.test(domain)) return fail('must be a domain name, not an IP address');
  if (!domain.includes('.')) return fail('must have at least two labels (browsers refuse "com")');
  if (host !== undefined && host !== domain && !host.endsWith(`.${domain}`)) {
    return fail(`must be the publicUrl host (${host}) or a parent domain of it`);
  }
  return domain;
}

async function importSigningKey(
  raw: AtProtoSigningKeyInput,
  where: string,
  problems: string[],
): Promise<Key | undefined> {
  let jwkOrPem: string | Record<string, unknown>;
  let kid: string | undefined;
  if (typeof raw === 'string') {
    const text = raw.trim();
    if (text.startsWith('-----BEGIN')) {
      problems.push(
        `${where} is a PEM string without a kid: pass { kid: "...", pem: "-----BEGIN PRIVATE KEY-----..." }`,
      );
      return undefined;
    }
    try {
      jwkOrPem = JSON.parse(text) as Record<string, unknown>;
    } catch {
      problems.push(
        `${where} is neither a JWK in JSON nor a PEM: give a private ES256 JWK with a "kid"`,
      );
      return undefined;
    }
  } else if (raw && typeof raw === 'object' && typeof (raw as { pem?: unknown }).pem === 'string') {
    jwkOrPem = (raw as { pem: string }).pem;
    kid = (raw as { kid?: unknown }).kid as string | undefined;
    if (typeof kid !== 'string' || !kid) {
      problems.push(`${where} has a pem but no kid: add a "kid" string`);
      return undefined;
    }
  } else {
    jwkOrPem = raw as Record<string, unknown>;
  }
  if (typeof jwkOrPem === 'object') {
    if (typeof jwkOrPem.d !== 'string') {
      problems.push(
        `${where} is not a private key (no "d"): give the private JWK; only its public half is published`,
      );
      return undefined;
    }
    if (jwkOrPem.kty !== 'EC' || jwkOrPem.crv !== 'P-256') {
      problems.push(
        `${where} must be an EC P-256 key (ES256), e.g. generated with JoseKey.generate(['ES256'], kid)`,
      );
      return undefined;
    }
    if (typeof jwkOrPem.kid !== 'string' || !jwkOrPem.kid) {
      problems.push(
        `${where} has no "kid": every signing key needs a unique kid (sessions are bound to it)`,
      );
      return undefined;
    }
  }
  try {
    const key = await JoseKey.fromImportable(jwkOrPem as string, kid);
    if (!key.isPrivate) {
      problems.push(
        `${where} is not a private key: give the private key; only its public half is published`,
      );
      return undefined;
    }
    if (!key.algorithms.includes('ES256')) {
      problems.push(`${where} does not support ES256: use an EC P-256 key`);
      return undefined;
    }
    if (!key.kid) {
      problems.push(`${where} has no kid`);
      return undefined;
    }
    return key;
  } catch {
    // The importer's message may quote the input: say what is wrong without it.
    problems.push(`${where} could not be imported as a private ES256 key (malformed JWK or PEM)`);
    return undefined;
  }
}
