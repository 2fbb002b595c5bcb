import {
  type CanActivate,
  type ExecutionContext,
  ForbiddenException,
  Inject,
  Injectable,
  UnauthorizedException,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { OAuthSession } from '@atproto/oauth-client-node';
import {
  AT_PROTO_CREDENTIALS_KEY,
  AT_PROTO_OAUTH_SCOPES_KEY,
  AT_PROTO_OPTIONS,
  AT_PROTO_PUBLIC_KEY,
  AT_PROTO_REQUEST_KEY,
} from '../at-proto.constants.js';
import { apiKeyHasScopes, AtProtoApiKeyService } from '../api-keys/api-key.service.js';
import type { AtProtoCredentialKind } from '../credentials/credentials.js';
import { JWT_SHAPE } from '../native/native-tokens.js';
import { AtProtoNativeService } from '../native/native.service.js';
import type { AtProtoCredentialsOptions } from '../decorators/at-proto-credentials.decorator.js';
import { AtProtoSessionUnavailableError } from '../errors/at-proto-http.errors.js';
import { AtProtoInsufficientScopeException } from '../errors/at-proto-insufficient-scope.exception.js';
import { normalizeReturnTo } from '../oauth/login-input.js';
import { missingScopes, type RequiredScope } from '../scopes/oauth-scopes.js';
import { AT_PROTO_MESSAGES, toHttpException } from '../errors/to-http-exception.js';
import { AtProtoAuthService } from '../oauth/at-proto-auth.service.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { AppSessionService } from '../session/app-session.service.js';
import { type HttpRequestLike, isCrossSiteRequest, readCookie } from '../session/http.util.js';
import { AT_PROTO_GUARD_SEEN, type AtProtoRequestAuth } from './at-proto-request-auth.js';

/** What authenticated a request, before it is attached. */
interface Authenticated {
  did: string;
  credential: AtProtoCredentialKind;
  appSessionId?: string;
  apiKeyId?: string;
}

/** A bearer value: `Authorization: Bearer <value>` (RFC 6750 §2.1: one value, b64token). */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

const NOT_ACCEPTED: Record<AtProtoCredentialKind, string> = {
  cookie: 'Browser sessions are not accepted here: use an access token or an API key.',
  bearer: 'Access tokens are not accepted here.',
  'api-key': 'API keys are not accepted here.',
};

/**
 * Authenticates a request and attaches the user's DID (`@AtProtoDid()`) and a lazy
 * OAuth-session restore (`@AtProtoSession()`). The credential is, in this order:
 * - `Authorization: Bearer <value>`: an access token of a native or CLI app (a JWT) or an API
 *   key (it starts with the configured key prefix). The header decides: a cookie on the same
 *   request is ignored, and so is the cross-site check, which only protects cookies (a page
 *   of another site cannot set this header without CORS approval);
 * - the app-session cookie of a browser; a cookie-authenticated POST/PUT/PATCH/DELETE from
 *   another site (not a trusted origin) is refused (403).
 *
 * A route accepts the credentials of the module's `credentials.allow` (cookies and access
 * tokens by default) or of `@AtProtoCredentials({ allow })`: another one gets a 403 saying
 * so. Only the credential is checked here (an app session, or an API key): the OAuth session
 * is restored when a handler asks for it, never on every request. Routes marked `@Public()`
 * pass without a credential (and get the identity when one is valid).
 *
 * Registered globally by default (`globalGuard`); otherwise use `@UseGuards(AtProtoAuthGuard)`.
 * @publicApi
 */
@Injectable()
export class AtProtoAuthGuard implements CanActivate {
  /**
   * What a route asks of the guard, by handler and class (a handler inherited by two
   * controllers may be public in one only). Decorators set this metadata once, when classes
   * are defined, so it is read once per route instead of on every request.
   */
  readonly #routes = new WeakMap<object, WeakMap<object, RouteRules>>();

  constructor(
    private readonly reflector: Reflector,
    private readonly appSessions: AppSessionService,
    private readonly auth: AtProtoAuthService,
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    private readonly native: AtProtoNativeService,
    private readonly apiKeys: AtProtoApiKeyService,
  ) {}

  // Not `async`: a request whose credential is in this instance's caches is decided without
  // a promise (the hot path, see docs/benchmarks.md); the others return one.
  canActivate(context: ExecutionContext): boolean | Promise<boolean> {
    const route = this.#rules(context);
    if (context.getType() !== 'http') {
      // Fail closed: this guard only understands HTTP requests. A global guard that waved
      // GraphQL resolvers or microservice handlers through would leave them open.
      if (route.isPublic) return true;
      throw new ForbiddenException(
        `AtProtoAuthGuard only authenticates HTTP requests; mark this ${context.getType()} ` +
          'handler @Public() and protect it with a guard of its own.',
      );
    }
    const req = context.switchToHttp().getRequest<HttpRequestLike>();
    // Registered globally and with @UseGuards: authenticate once.
    if (req[AT_PROTO_REQUEST_KEY]) return true;
    req[AT_PROTO_GUARD_SEEN as unknown as string] = true;
    let found: Authenticated | undefined | Promise<Authenticated | undefined>;
    try {
      found = this.#authenticate(req, context, route);
    } catch (error) {
      throw asHttpError(error);
    }
    if (route.oauthScopes.length > 0) {
      return Promise.resolve(found)
        .then((f) => this.#withScopes(req, context, route, f))
        .catch((error: unknown) => {
          throw asHttpError(error);
        });
    }
    if (found instanceof Promise) {
      return found.then(
        (f) => this.#attach(req, f),
        (error: unknown) => {
          throw asHttpError(error);
        },
      );
    }
    return this.#attach(req, found);
  }

  /**
   * `@AtProtoScope()`: the scopes the user's OAuth session was granted, read from the store
   * on every request of such a route (no cache: right after a step-up on another instance,
   * the wider grant must count at once, or the user would be sent to log in again).
   */
  async #withScopes(
    req: HttpRequestLike,
    context: ExecutionContext,
    route: RouteRules,
    found: Authenticated | undefined,
  ): Promise<true> {
    if (!found) return true; // a public route, without a (valid) credential
    const granted = await this.auth.grantedScope(found.did);
    if (granted === undefined) {
      if (route.isPublic) return true;
      if (found.credential !== 'cookie') {
        // RFC 6750 §3: a 401 to a bearer request says why.
        context
          .switchToHttp()
          .getResponse<{ setHeader?(n: string, v: string): unknown }>()
          .setHeader?.('WWW-Authenticate', 'Bearer error="invalid_token"');
      }
      throw new AtProtoSessionUnavailableError(AT_PROTO_MESSAGES.sessionEnded, { did: found.did });
    }
    const missing = missingScopes(granted, route.oauthScopes);
    if (missing.length === 0) return this.#attach(req, found);
    if (route.isPublic) return true;
    const scope = missing.map((m) => m.scope).join(' ');
    const loginUrl = new URL(this.options.urls.login);
    loginUrl.search = new URLSearchParams({
      input: found.did,
      scope: this.options.declaredScopes.stepUpScope(granted, missing),
      returnTo: this.#returnTo(req),
    }).toString();
    if (found.credential !== 'cookie') {
      // RFC 6750 §3.1; the scope tokens cannot hold a quote or a backslash (checked by
      // @AtProtoScope()).
      context
        .switchToHttp()
        .getResponse<{ setHeader?(n: string, v: string): unknown }>()
        .setHeader?.('WWW-Authenticate', `Bearer error="insufficient_scope", scope="${scope}"`);
    }
    throw new AtProtoInsufficientScopeException(scope, loginUrl.href);
  }

  /**
   * Where a step-up login returns: the request's own `returnTo` query, else the page that
   * sent it (a same-origin or trusted `Referer`), else `afterLoginPath`. Each is checked as
   * the login route checks `returnTo`; the first acceptable one wins.
   */
  #returnTo(req: HttpRequestLike): string {
    const { publicUrl, afterLoginPath, trustedOrigins, origin } = this.options;
    const raw = req.originalUrl ?? req.url;
    const url = typeof raw === 'string' ? raw : '';
    const fromQuery = URL.canParse(url, 'http://x.invalid')
      ? new URL(url, 'http://x.invalid').searchParams.get('returnTo')
      : null;
    const referer = req.headers.referer;
    let fromReferer: string | undefined;
    if (typeof referer === 'string' && URL.canParse(referer)) {
      const page = new URL(referer);
      fromReferer =
        page.origin === origin ? `${page.pathname}${page.search}${page.hash}` : page.href;
    }
    for (const candidate of [fromQuery, fromReferer]) {
      if (candidate === null || candidate === undefined || candidate === '') continue;
      try {
        return normalizeReturnTo(candidate, publicUrl, afterLoginPath, trustedOrigins);
      } catch {
        // Not acceptable as a place to return to: try the next one.
      }
    }
    return afterLoginPath;
  }

  /** The route's rules, read from its metadata once. */
  #rules(context: ExecutionContext): RouteRules {
    const handler = context.getHandler();
    const cls = context.getClass();
    let byClass = this.#routes.get(handler);
    const known = byClass?.get(cls);
    if (known) return known;
    const targets = [handler, cls];
    const credentials = this.reflector.getAllAndOverride<AtProtoCredentialsOptions | undefined>(
      AT_PROTO_CREDENTIALS_KEY,
      targets,
    );
    const rules: RouteRules = {
      isPublic:
        this.reflector.getAllAndOverride<boolean | undefined>(AT_PROTO_PUBLIC_KEY, targets) ===
        true,
      allow: credentials?.allow ?? this.options.credentialsAllow,
      scopes: credentials?.scopes ?? [],
      oauthScopes: targets.flatMap(
        (t) => (Reflect.getMetadata(AT_PROTO_OAUTH_SCOPES_KEY, t) ?? []) as RequiredScope[],
      ),
    };
    if (!byClass) this.#routes.set(handler, (byClass = new WeakMap()));
    byClass.set(cls, rules);
    return rules;
  }

  /** Attaches what authenticated the request (nothing on a public route without one). */
  #attach(req: HttpRequestLike, found: Authenticated | undefined): true {
    if (!found) return true; // a public route, without a (valid) credential
    let restored: Promise<OAuthSession> | undefined;
    const { did, appSessionId } = found;
    const auth: AtProtoRequestAuth = {
      did,
      credential: found.credential,
      appSessionId,
      ...(found.apiKeyId === undefined ? {} : { apiKeyId: found.apiKeyId }),
      restore: () =>
        (restored ??= this.auth.restore(did).catch(async (error: unknown) => {
          // The OAuth session has ended for good (revoked, refresh refused): a device's app
          // session cannot act as the user any more, so end it too; the next request is then
          // plainly signed out instead of looping between "signed in" and 401. An API key is
          // kept: its owner signs in again and the key works again.
          if (error instanceof AtProtoSessionUnavailableError && appSessionId) {
            await this.appSessions.revoke(appSessionId).catch(() => undefined);
          }
          throw error;
        })),
    };
    req[AT_PROTO_REQUEST_KEY] = auth;
    return true;
  }

  /**
   * The request's credential, checked; undefined on a public route without a valid one.
   * Synchronous when the credential is in this instance's caches.
   */
  #authenticate(
    req: HttpRequestLike,
    context: ExecutionContext,
    route: RouteRules,
  ): Authenticated | undefined | Promise<Authenticated | undefined> {
    const authorization = req.headers.authorization;
    // Only the Bearer scheme is the module's: another one (a staging proxy's Basic auth,
    // which browsers resend on their own) leaves the cookie in charge, cross-site check
    // included.
    if (typeof authorization === 'string' && /^Bearer(?: |$)/i.test(authorization)) {
      return this.#bearer(authorization, context, route);
    }

    const id = AppSessionService.idOfToken(readCookie(req, this.options.cookie.sessionName));
    if (id === undefined) return this.#cookie(req, route, undefined);
    const cached = this.appSessions.cachedActive(id);
    if (cached) return this.#cookie(req, route, cached);
    return this.appSessions.validateId(id).then((session) => this.#cookie(req, route, session));
  }

  /** The checks of a cookie request, once its app session is known (or not). */
  #cookie(
    req: HttpRequestLike,
    route: RouteRules,
    session: { id: string; did: string } | undefined,
  ): Authenticated | undefined {
    const { isPublic } = route;
    if (!session) {
      if (isPublic) return undefined;
      throw new UnauthorizedException(AT_PROTO_MESSAGES.signIn);
    }
    if (!route.allow.includes('cookie')) {
      if (isPublic) return undefined;
      throw new ForbiddenException(NOT_ACCEPTED.cookie);
    }
    if (isCrossSiteRequest(req, this.options.origin, this.options.trustedOrigins)) {
      // On a public route the request simply proceeds without the user's identity.
      if (isPublic) return undefined;
      throw new ForbiddenException(AT_PROTO_MESSAGES.crossSite);
    }
    return { did: session.did, credential: 'cookie', appSessionId: session.id };
  }

  /** `Authorization: Bearer <access token or API key>`. */
  #bearer(
    authorization: string,
    context: ExecutionContext,
    route: RouteRules,
  ): Authenticated | undefined | Promise<Authenticated | undefined> {
    const { isPublic, allow } = route;
    const value = BEARER.exec(authorization)?.[1];
    const kind: AtProtoCredentialKind | undefined =
      value === undefined
        ? undefined
        : value.startsWith(this.options.apiKeys.prefix)
          ? 'api-key'
          : JWT_SHAPE.test(value)
            ? 'bearer'
            : undefined;
    if (!value || !kind) {
      return this.refuse(
        context,
        isPublic,
        'invalid_request',
        'Send "Authorization: Bearer <access token or API key>".',
      );
    }
    if (!allow.includes(kind)) {
      if (isPublic) return undefined;
      throw new ForbiddenException(NOT_ACCEPTED[kind]);
    }
    if (kind === 'api-key') {
      const cached = this.apiKeys.cachedActive(value);
      if (cached) return this.#apiKey(context, route, cached);
      return this.apiKeys.validate(value).then((key) => this.#apiKey(context, route, key));
    }
    const token = this.native.verifiedCached(value);
    const session = token && this.appSessions.cachedActive(token.appSessionId);
    if (token && session) return this.#accessToken(context, isPublic, token, session);
    return this.native
      .verifyAccessToken(value)
      .then(async (verified) =>
        this.#accessToken(
          context,
          isPublic,
          verified,
          verified ? await this.appSessions.validateId(verified.appSessionId) : undefined,
        ),
      );
  }

  #apiKey(
    context: ExecutionContext,
    route: RouteRules,
    key: { id: string; did: string; scopes: readonly string[] | null } | undefined,
  ): Authenticated | undefined {
    const { isPublic, scopes } = route;
    if (!key) {
      return this.refuse(
        context,
        isPublic,
        'invalid_token',
        'This API key is unknown, revoked or expired.',
      );
    }
    if (!apiKeyHasScopes(key, scopes)) {
      if (isPublic) return undefined;
      throw new ForbiddenException(
        `This API key lacks a scope this route requires (${scopes.join(', ')}).`,
      );
    }
    return { did: key.did, credential: 'api-key', apiKeyId: key.id };
  }

  #accessToken(
    context: ExecutionContext,
    isPublic: boolean,
    token: { did: string } | undefined,
    session: { id: string; did: string } | undefined,
  ): Authenticated | undefined {
    if (!token || !session || session.did !== token.did) {
      return this.refuse(
        context,
        isPublic,
        'invalid_token',
        'The access token is invalid, expired or revoked.',
      );
    }
    return { did: session.did, credential: 'bearer', appSessionId: session.id };
  }

  /** A 401 for a bad bearer credential (RFC 6750 §3), or nothing on a public route. */
  private refuse(
    context: ExecutionContext,
    isPublic: boolean,
    error: 'invalid_request' | 'invalid_token',
    message: string,
  ): undefined {
    if (isPublic) return undefined;
    const res = context.switchToHttp().getResponse<{ setHeader?(n: string, v: string): unknown }>();
    res.setHeader?.('WWW-Authenticate', `Bearer error="${error}"`);
    throw new UnauthorizedException(message);
  }
}

/** What a route asks of the guard. */
interface RouteRules {
  readonly isPublic: boolean;
  readonly allow: readonly AtProtoCredentialKind[];
  /** API-key scopes the route requires. */
  readonly scopes: readonly string[];
  /** OAuth scopes the user's session must have been granted (`@AtProtoScope()`). */
  readonly oauthScopes: readonly RequiredScope[];
}

/** The database is unreachable (retries exhausted): say so (503), rather than a 500. */
function asHttpError(error: unknown): unknown {
  return toHttpException(error, 'session') ?? error;
}
