import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { ModulesContainer } from '@nestjs/core';
import { controllerMethods } from '../http/controller-methods.js';
import { AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { AT_PROTO_LOCK_CONNECTION } from '../at-proto.internal-constants.js';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import {
  AtProtoServiceJwtError,
  type AtProtoServiceJwtErrorName,
} from '../errors/at-proto-service-jwt.error.js';
import { describeError } from '../errors/describe-error.js';
import { createOutboundFetch, parsePrivateHost } from '../oauth/outbound-fetch.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { loadOptional } from '../redis/optional-dependency.js';
import type { RedisScriptingClient } from '../storage/redis/redis-client.js';
import { type IdentityModule, IssuerKeyResolver } from './issuer-key-resolver.js';
import {
  type JtiReplayStore,
  MemoryJtiReplayStore,
  RedisJtiReplayStore,
} from './jti-replay-store.js';
import {
  AT_PROTO_SERVICE_AUTH_KEY,
  type AtProtoServiceAuthRouteOptions,
  checkServiceAuthRoute,
  NSID,
  type ServiceAuthRoute,
} from './service-auth-route.js';
import {
  type AtProtoVerifiedTokenCacheStats,
  type VerifiedClaims,
  VerifiedTokenCache,
} from './verified-token-cache.js';

/**
 * The service that called an `@AtProtoServiceAuth()` route, as its token says (verified).
 * @publicApi
 */
export interface AtProtoServiceCaller {
  /** The calling account or service: the DID part of `iss`. */
  readonly did: string;
  /** The service of that DID that signed, when `iss` is `did#serviceId` (e.g. `atproto_labeler`). */
  readonly serviceId?: string;
  /** The audience the token was for (one of this backend's DIDs). */
  readonly aud: string;
  /** The method the token was for; `null` for a method-less token (`allowMethodless`). */
  readonly lxm: string | null;
}

/** What the verifier needs of `@atproto/xrpc-server` (an optional peer). */
type XrpcServerModule = Pick<typeof import('@atproto/xrpc-server'), 'verifyJwt'>;

/** Longer tokens are refused before anything is decoded (a PDS's are ~500 characters). */
const MAX_TOKEN_LENGTH = 4096;
const B64URL = /^[A-Za-z0-9_-]+$/;
/** `Authorization: Bearer <token>` (one value). */
const BEARER = /^Bearer +(\S+) *$/i;
/** User-token types a service token must not carry (RFC 9068 access tokens, refresh, DPoP). */
const USER_TOKEN_TYPES = new Set(['at+jwt', 'refresh+jwt', 'dpop+jwt']);
const ALGORITHMS = new Set(['ES256K', 'ES256']);
/**
 * Issuers: `did:plc` and `did:web` only, optionally with a `#serviceId`. Any other method is
 * refused: `@atproto/identity` resolves a `did:key` to itself, so a token signed by any key
 * with `iss: did:key:<that key>` would verify.
 */
const ISSUER =
  /^(did:plc:[a-z2-7]{24}|did:web:[A-Za-z0-9.-]+(?:%3[Aa][0-9]{1,5})?)(?:#([A-Za-z0-9._~:-]{1,128}))?$/;
/** How far ahead a method-less token may expire: what a PDS issues at most. */
const METHODLESS_MAX_AGE_MS = 60_000;
const MAX_JTI = 256;

/** @internal */
const PACKAGES_FOR = 'Inbound service auth (@AtProtoServiceAuth)';

/**
 * Verifies the service-auth tokens other AT Protocol services send to this backend
 * (`Authorization: Bearer <jwt>`): the guard of `@AtProtoServiceAuth()` uses it, and so can
 * code that authenticates elsewhere (a WebSocket handshake).
 *
 * `verifyJwt` of `@atproto/xrpc-server` checks the signature, re-resolving the issuer's DID
 * document once when it does not match (the key may have been rotated); everything it does
 * not check is checked here first, before any DID is resolved: the size, the JSON of header
 * and claims, `typ` and `alg`, the issuer's DID method, `aud` against this backend's DIDs
 * (bare and `#service` forms), `lxm` (never skipped), `exp` (not passed, not further ahead
 * than `serviceAuth.maxAge`), `iat` (not in the future beyond `serviceAuth.clockSkew`) and,
 * on single-use routes, the `jti` (remembered for the token's lifetime, in Redis when
 * configured). DID documents are resolved through the module's SSRF-guarded fetch.
 *
 * A token whose signature has been verified is remembered until its `exp` (by its SHA-256,
 * at most `serviceAuth.verifiedCacheMaxEntries` tokens): when a caller sends it again, the
 * signature check and the issuer's key lookup are skipped, and every other check above runs
 * again (see `VerifiedTokenCache`).
 *
 * Needs `@atproto/xrpc-server` and `@atproto/identity` (optional peers), loaded at boot when
 * a route uses `@AtProtoServiceAuth()` or `serviceAuth.serviceDid(s)` is set.
 * @publicApi
 */
@Injectable()
export class AtProtoServiceJwtVerifier implements OnModuleInit {
  readonly #logger = new Logger('AtProtoServiceAuth');
  readonly #replay: JtiReplayStore;
  readonly #verified: VerifiedTokenCache;
  #loaded: Promise<{ xrpc: XrpcServerModule; resolver: IssuerKeyResolver }> | undefined;

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    @Inject(AT_PROTO_LOCK_CONNECTION) redis: RedisScriptingClient | null,
    private readonly modules: ModulesContainer,
  ) {
    this.#replay =
      options.serviceAuth.replayStore === 'redis' && redis
        ? new RedisJtiReplayStore(redis, options.redisKeyPrefix)
        : new MemoryJtiReplayStore();
    this.#verified = new VerifiedTokenCache(options.serviceAuth.verifiedCacheMaxEntries);
  }

  /**
   * Fails the boot when a route of the app uses `@AtProtoServiceAuth()` without an audience
   * (no `aud` on it, no `serviceAuth.serviceDid`), or when the packages it needs are missing.
   * @internal
   */
  async onModuleInit(): Promise<void> {
    const routes = this.#decoratedRoutes();
    const withoutAudience = routes.filter((r) => r.route.aud === undefined).map((r) => r.name);
    if (withoutAudience.length > 0 && this.options.serviceAuth.serviceDids.length === 0) {
      throw new AtProtoConfigError(
        [
          `serviceAuth.serviceDid is needed by @AtProtoServiceAuth() on ${withoutAudience.slice(0, 5).join(', ')}` +
            `${withoutAudience.length > 5 ? ', …' : ''}: the DID other services address this backend by ` +
            `(did:web:api.example.com), or give those routes an aud`,
        ],
        'AtProtoModule serviceAuth',
      );
    }
    if (routes.length > 0 || this.options.serviceAuth.serviceDids.length > 0) await this.#load();
  }

  /**
   * Verifies `Authorization: <value>` (the header as received) for a route.
   * @param path the request's path, needed when `route.lxm` is `'route'`
   * @throws AtProtoServiceJwtError when the token is refused (see its `error` and `status`)
   */
  async verify(
    authorization: string | undefined,
    route: AtProtoServiceAuthRouteOptions,
    path?: string,
  ): Promise<AtProtoServiceCaller> {
    return this.verifyChecked(authorization, checkServiceAuthRoute(route), path);
  }

  /** {@link verify} with options already checked (the guard's). @internal */
  async verifyChecked(
    authorization: string | undefined,
    route: ServiceAuthRoute,
    path?: string,
  ): Promise<AtProtoServiceCaller> {
    if (typeof authorization !== 'string' || authorization.length === 0) {
      throw refuse('AuthMissing', 'Send "Authorization: Bearer <service-auth token>".');
    }
    if (authorization.length > MAX_TOKEN_LENGTH + 16) {
      throw refuse('BadJwt', 'The token is too large.');
    }
    const token = BEARER.exec(authorization)?.[1];
    if (!token) throw refuse('AuthMissing', 'Send "Authorization: Bearer <service-auth token>".');
    if (token.length > MAX_TOKEN_LENGTH) throw refuse('BadJwt', 'The token is too large.');

    const lxm = route.lxm ?? methodOfPath(path);
    const key = this.#verified.enabled ? VerifiedTokenCache.keyOf(token) : undefined;
    let claims = key === undefined ? undefined : this.#verified.get(key);
    if (claims) {
      // Verified before (see VerifiedTokenCache for why that stays true until exp): only the
      // signature and the issuer's key lookup are skipped; every rule of this request and
      // route runs again.
      this.#checkRequest(claims, route, lxm);
    } else {
      claims = this.#read(token);
      this.#checkRequest(claims, route, lxm);
      const { xrpc, resolver } = await this.#load();
      try {
        // aud is checked above (bare and #service forms), so verifyJwt's exact match is off;
        // lxm is never null unless the token has none and the route accepts that.
        await xrpc.verifyJwt(
          token,
          null,
          claims.lxm === null ? null : (lxm as string),
          (iss: string, forceRefresh: boolean) => resolver.key(iss, forceRefresh),
        );
      } catch (error) {
        throw this.#fromVerifyJwt(error);
      }
      // Only now, the signature verified: a refused token is never remembered.
      if (key !== undefined) this.#verified.set(key, claims);
    }

    if (route.singleUse) await this.#claim(claims.iss, claims.jti as string, claims.exp);
    return {
      did: claims.did,
      ...(claims.serviceId === undefined ? {} : { serviceId: claims.serviceId }),
      aud: claims.aud,
      lxm: claims.lxm,
    };
  }

  /**
   * Counters of the verified-token cache (`serviceAuth.verifiedCacheMaxEntries`): tokens
   * held, requests answered without verifying a signature again (hits), and those verified
   * in full (misses). All 0 when the cache is off.
   */
  stats(): AtProtoVerifiedTokenCacheStats {
    return this.#verified.stats();
  }

  /**
   * What depends on the token alone, before any network: its size and shape, the JSON of
   * header and claims, `typ`, `alg`, the claims' types and the issuer's DID method. The
   * result is what the verified-token cache keeps.
   */
  #read(token: string): VerifiedClaims {
    const parts = token.split('.');
    if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) {
      throw refuse('BadJwt', 'The token is not a JWT.');
    }
    const header = decode(parts[0] as string);
    const payload = decode(parts[1] as string);
    if (typeof header.typ === 'string' && USER_TOKEN_TYPES.has(header.typ.toLowerCase())) {
      throw refuse(
        'BadJwtType',
        `A ${header.typ.toLowerCase()} token is not a service-auth token.`,
      );
    }
    if (typeof header.alg !== 'string' || !ALGORITHMS.has(header.alg)) {
      throw refuse('BadJwtAlgorithm', 'The token must be signed with ES256K or ES256.');
    }
    const { iss, aud, exp, iat, jti } = payload;
    const tokenLxm = payload.lxm;
    if (
      typeof iss !== 'string' ||
      iss.length > 2048 ||
      typeof aud !== 'string' ||
      aud.length > 2048 ||
      typeof exp !== 'number' ||
      !Number.isFinite(exp) ||
      (iat !== undefined && (typeof iat !== 'number' || !Number.isFinite(iat))) ||
      (tokenLxm !== undefined && typeof tokenLxm !== 'string') ||
      (jti !== undefined && (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI))
    ) {
      throw refuse('BadJwt', 'The token lacks iss, aud or exp, or a claim has the wrong type.');
    }
    const issuer = ISSUER.exec(iss);
    if (!issuer) {
      throw refuse(
        'BadJwtIssuer',
        'The issuer (iss) must be a did:plc or did:web, optionally with a #service.',
      );
    }
    return {
      iss,
      did: issuer[1] as string,
      serviceId: issuer[2],
      aud,
      lxm: (tokenLxm as string | undefined) ?? null,
      exp,
      iat: iat as number | undefined,
      jti: jti as string | undefined,
    };
  }

  /**
   * What may differ per request or per route, on every request (a token found verified
   * included): the audience and method of the route, `exp` against the clock, `maxAge`,
   * `iat` with the clock skew, and a `jti` on single-use routes.
   */
  #checkRequest(claims: VerifiedClaims, route: ServiceAuthRoute, lxm: string | undefined): void {
    if (!audienceMatches(claims.aud, route.aud ?? this.options.serviceAuth.serviceDids)) {
      throw refuse('BadJwtAudience', 'The token is for another service (aud).');
    }
    if (lxm === undefined) {
      throw refuse('BadJwtLexiconMethod', 'This path names no method (/xrpc/<nsid>).');
    }
    if (claims.lxm === null) {
      if (!route.allowMethodless) {
        throw refuse('BadJwtLexiconMethod', `The token names no method (lxm); must be ${lxm}.`);
      }
    } else if (claims.lxm !== lxm) {
      throw refuse('BadJwtLexiconMethod', `The token is for another method (lxm); must be ${lxm}.`);
    }
    const { maxAgeMs, clockSkewMs } = this.options.serviceAuth;
    const { exp, iat } = claims;
    const now = Date.now();
    if (now / 1000 > exp) throw refuse('JwtExpired', 'The token has expired.');
    const maxAhead = claims.lxm === null ? Math.min(maxAgeMs, METHODLESS_MAX_AGE_MS) : maxAgeMs;
    if (exp * 1000 - now > maxAhead + clockSkewMs) {
      throw refuse(
        'BadJwtExpiration',
        `The token expires too far ahead (at most ${Math.round(maxAhead / 1000)} s${claims.lxm === null ? ' without lxm' : ''}).`,
      );
    }
    if (iat !== undefined && iat * 1000 > now + clockSkewMs) {
      throw refuse('BadJwtIssuedAt', 'The token is issued in the future (iat).');
    }
    if (route.singleUse && claims.jti === undefined) {
      throw refuse('BadJwt', 'This route accepts each token once: the token needs a jti.');
    }
  }

  async #claim(iss: string, jti: string, exp: number): Promise<void> {
    // Remembered until the token expires (and the skew after it, which other checks allow).
    const ttlMs = exp * 1000 - Date.now() + this.options.serviceAuth.clockSkewMs;
    let first: boolean;
    try {
      first = await this.#replay.claim(`${iss}\n${jti}`, ttlMs);
    } catch (error) {
      this.#logger.warn(`The service-auth replay store cannot be reached: ${describeError(error)}`);
      throw new AtProtoServiceJwtError(
        'ReplayStoreUnavailable',
        'Single-use tokens cannot be checked right now. Try again.',
        { cause: error },
      );
    }
    if (!first) throw refuse('JwtReplayed', 'This token has already been used (jti).');
  }

  /** `verifyJwt`'s errors (and the resolver's, which it lets through) as the module's. */
  #fromVerifyJwt(error: unknown): AtProtoServiceJwtError {
    if (error instanceof AtProtoServiceJwtError) {
      if (error.status === 503) {
        this.#logger.warn(`Resolving a service-auth issuer failed: ${describeError(error.cause)}`);
      }
      return error;
    }
    const name = (error as { customErrorName?: unknown } | null)?.customErrorName;
    switch (name) {
      case 'BadJwtSignature':
        return refuse('BadJwtSignature', "The signature is not the issuer's.", error);
      case 'JwtExpired':
        return refuse('JwtExpired', 'The token has expired.', error);
      case 'BadJwtLexiconMethod':
        return refuse('BadJwtLexiconMethod', 'The token is for another method (lxm).', error);
      case 'BadJwtIss':
        return refuse('BadJwtIssuer', 'The issuer (iss) is not a valid DID.', error);
      case 'BadJwtType':
        return refuse('BadJwtType', 'This token type is not a service-auth token.', error);
      default:
        // Anything else (a SyntaxError escaping its parser included) is an unreadable token,
        // never a 500.
        return refuse('BadJwt', 'The token cannot be verified.', error);
    }
  }

  #load(): Promise<{ xrpc: XrpcServerModule; resolver: IssuerKeyResolver }> {
    this.#loaded ??= (async () => {
      const [xrpc, identity] = await Promise.all([
        loadOptional<XrpcServerModule>('@atproto/xrpc-server', PACKAGES_FOR),
        loadOptional<IdentityModule>('@atproto/identity', PACKAGES_FOR),
      ]);
      const { options } = this;
      const resolver = new IssuerKeyResolver(identity, {
        plcUrl: options.plcDirectoryUrl,
        // Issuers are chosen by whoever sends a token: their DID documents are fetched
        // through the same guard as the OAuth client's requests (no private network unless
        // listed in dangerouslyAllowPrivateHosts, https unless allowHttpServers).
        fetch: createOutboundFetch({
          allowHttp: options.allowHttpServers,
          privateHosts: options.privateHosts.flatMap((entry) => parsePrivateHost(entry) ?? []),
          timeoutMs: options.httpTimeoutMs,
        }),
        timeoutMs: options.httpTimeoutMs,
      });
      return { xrpc, resolver };
    })();
    // A failed load is reported once per call, not cached as a rejected promise forever.
    this.#loaded.catch(() => (this.#loaded = undefined));
    return this.#loaded;
  }

  /** The controller methods (and classes) of the app that carry `@AtProtoServiceAuth()`. */
  #decoratedRoutes(): { name: string; route: ServiceAuthRoute }[] {
    const found: { name: string; route: ServiceAuthRoute }[] = [];
    for (const { cls, name, fn } of controllerMethods(this.modules)) {
      const route =
        (Reflect.getMetadata(AT_PROTO_SERVICE_AUTH_KEY, fn) as ServiceAuthRoute | undefined) ??
        (Reflect.getMetadata(AT_PROTO_SERVICE_AUTH_KEY, cls) as ServiceAuthRoute | undefined);
      if (route) found.push({ name: `${cls.name}.${name}`, route });
    }
    return found;
  }
}

function refuse(
  error: AtProtoServiceJwtErrorName,
  message: string,
  cause?: unknown,
): AtProtoServiceJwtError {
  return new AtProtoServiceJwtError(error, message, cause === undefined ? undefined : { cause });
}

/** A JWT segment's JSON object; anything else (a SyntaxError included) is `BadJwt`. */
function decode(segment: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch (error) {
    throw refuse('BadJwt', 'The token is not a JWT (unreadable JSON).', error);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw refuse('BadJwt', 'The token is not a JWT.');
  }
  return value as Record<string, unknown>;
}

/**
 * Whether `aud` is one of `accepted`: equal to an entry, or a `#service` form of a bare one
 * (the DID is this backend's; the fragment only says which of its services was addressed).
 */
function audienceMatches(aud: string, accepted: readonly string[]): boolean {
  const hash = aud.indexOf('#');
  const bare = hash === -1 ? aud : aud.slice(0, hash);
  return accepted.some((entry) => entry === aud || entry === bare);
}

/** The NSID of an `/xrpc/<nsid>` path (the last `/xrpc/` segment), if it is one. */
function methodOfPath(path: string | undefined): string | undefined {
  if (typeof path !== 'string') return undefined;
  const pathname = path.split('?', 1)[0] as string;
  const match = /\/xrpc\/([^/]+)\/?$/.exec(pathname);
  const nsid = match?.[1];
  return nsid !== undefined && nsid.length <= 317 && NSID.test(nsid) ? nsid : undefined;
}
