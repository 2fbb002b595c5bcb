import {
  Body,
  Controller,
  ForbiddenException,
  Get,
  Header,
  Inject,
  Logger,
  NotFoundException,
  Post,
  Query,
  Req,
  Res,
  type Type,
  UnauthorizedException,
} from '@nestjs/common';
import { createHash } from 'node:crypto';
import { AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { Public } from '../decorators/public.decorator.js';
import { describeError } from '../errors/describe-error.js';
import { AT_PROTO_MESSAGES, toHttpException } from '../errors/to-http-exception.js';
import { AtProtoEvents } from '../events/at-proto-events.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { AppSessionService } from '../session/app-session.service.js';
import {
  clearCookie,
  type HttpRequestLike,
  type HttpResponseLike,
  isCrossSiteNavigation,
  isCrossSiteRequest,
  readCookie,
  readCookies,
  setCookie,
  wantsHtml,
} from '../session/http.util.js';
import { AtProtoApiKeyService } from '../api-keys/api-key.service.js';
import {
  fromNativeLoginAppState,
  parseNativeLoginRequest,
  toNativeLoginAppState,
} from '../native/native-login-request.js';
import { AtProtoTokenError } from '../native/native-token.error.js';
import {
  AtProtoNativeService,
  NATIVE_CONFIRMATION_PAGE_HEADERS,
  NATIVE_TOKEN_RESPONSE_HEADERS,
} from '../native/native.service.js';
import { AtProtoAuthService } from './at-proto-auth.service.js';

/** The parts of an Express response the routes use. @internal */
interface ResponseLike extends HttpResponseLike {
  redirect(status: number, url: string): void;
  status(code: number): { end(body?: string): void; json(body: unknown): void };
}

/**
 * The module's routes: client metadata, JWKS, login, callback, logout. The path prefix is
 * only known when the module is defined, so the class is subclassed and decorated with
 * `@Controller(prefix)` by {@link createOAuthController}.
 * @internal
 */
export class OAuthControllerBase {
  readonly #logger = new Logger('AtProtoAuth');

  constructor(
    @Inject(AT_PROTO_OPTIONS) protected readonly options: ResolvedAtProtoOptions,
    protected readonly auth: AtProtoAuthService,
    protected readonly appSessions: AppSessionService,
    protected readonly events: AtProtoEvents,
    protected readonly native: AtProtoNativeService,
    protected readonly apiKeys: AtProtoApiKeyService,
  ) {}

  /** The client metadata document; its URL is the client_id. */
  @Public()
  @Get('client-metadata.json')
  @Header('Cache-Control', 'public, max-age=300')
  clientMetadata(): unknown {
    if (this.options.clientMode === 'loopback') throw new NotFoundException();
    return this.auth.oauthClient.clientMetadata;
  }

  /** The public halves of the signing keys (never the private parts). */
  @Public()
  @Get('jwks.json')
  @Header('Cache-Control', 'public, max-age=300')
  jwks(): unknown {
    if (this.options.clientMode === 'loopback') throw new NotFoundException();
    return this.auth.oauthClient.jwks;
  }

  /** Starts a login: `GET /login?input=alice.bsky.social&returnTo=/me`. */
  @Public()
  @Get('login')
  async loginGet(
    @Query() query: Record<string, unknown>,
    @Req() req: HttpRequestLike,
    @Res() res: ResponseLike,
  ): Promise<void> {
    // Another site must not start a login in the user's browser (login CSRF: the attacker's
    // own account, consented on the attacker's server, would end signed in here). Links and
    // bookmarks (Sec-Fetch-Site: none) and the app's own pages are fine.
    if (isCrossSiteNavigation(req, this.options.origin)) {
      throw new ForbiddenException(
        'Logins must start from this app. Open the login page here and try again.',
      );
    }
    await this.login(query, req, res, 302);
  }

  /** Starts a login from a form post (`input`, `returnTo` fields, or a native app's). */
  @Public()
  @Post('login')
  async loginPost(
    @Body() body: Record<string, unknown> | undefined,
    @Req() req: HttpRequestLike,
    @Res() res: ResponseLike,
  ): Promise<void> {
    // A cross-site form could start a login the attacker controls (login CSRF): refuse it.
    if (isCrossSiteRequest(req, this.options.origin, this.options.trustedOrigins)) {
      throw new ForbiddenException(AT_PROTO_MESSAGES.crossSite);
    }
    await this.login(body ?? {}, req, res, 303);
  }

  /** The authorization server sends the browser back here. */
  @Public()
  @Get('callback')
  async callback(
    @Req() req: HttpRequestLike & { url?: string },
    @Res() res: ResponseLike,
  ): Promise<void> {
    const params = new URL(req.url ?? '', 'http://callback.invalid').searchParams;
    const userAgent = req.headers['user-agent'];
    // Several logins may be under way in one browser (tabs): each has its own login cookie,
    // named after the hash of its nonce, which the state row keeps. Whichever cookie opens
    // this state binds it; only that one is cleared.
    const logins = this.loginCookies(req);
    let used: string | undefined;
    const { did, returnTo, result } = await this.call(() =>
      this.auth.completeLogin(
        params,
        (binding) => {
          const name = loginCookieName(this.options.cookie.loginName, binding);
          used = logins.has(name) ? name : undefined;
          return used ? logins.get(name)!.nonce : undefined;
        },
        // Under the user's session lock (see AtProtoAuthService.completeLogin): the first
        // app session of a browser, or the one-time code of a native app (which becomes its
        // app session when the app redeems it).
        async (signedIn, nativeState, { expectedDid }): Promise<LoginOutcome> => {
          const request = fromNativeLoginAppState(nativeState, this.options.native);
          if (request) {
            const url = await this.native.issueCode(signedIn, request);
            return { kind: 'native', url, confirm: request.needsConfirmation };
          }
          const created = await this.appSessions.create(
            signedIn,
            typeof userAgent === 'string' ? userAgent : undefined,
          );
          // A step-up login (more scopes for the account already signed in here): this
          // browser's app session is renewed (a new cookie, the old one ended), as after
          // any change of privileges, so the device list does not grow by one per step-up.
          let renewed: string | undefined;
          if (expectedDid !== undefined) {
            const previous = await this.appSessions
              .validate(readCookie(req, this.options.cookie.sessionName))
              .catch(() => undefined);
            if (previous?.did === signedIn) {
              renewed = previous.id;
              await this.appSessions.revoke(previous.id).catch((error: unknown) => {
                this.#logger.warn(
                  `Step-up login: the previous app session is left to expire: ${describeError(error)}`,
                );
              });
            }
          }
          return { kind: 'browser', ...created, renewed };
        },
      ),
    );
    if (used) clearCookie(res, this.options, used);
    const outcome = result!;
    if (outcome.kind === 'native') {
      if (!outcome.confirm) return res.redirect(302, outcome.url.href);
      for (const [name, value] of Object.entries(NATIVE_CONFIRMATION_PAGE_HEADERS)) {
        res.setHeader(name, value);
      }
      return res
        .status(200)
        .end(
          this.native.confirmationPage(outcome.url, this.options.clientMetadata.client_name ?? ''),
        );
    }
    setCookie(
      res,
      this.options,
      this.options.cookie.sessionName,
      outcome.token,
      this.options.appSession.absoluteTtlMs,
    );
    this.events.emit({
      type: 'login',
      did,
      appSessionId: outcome.session.id,
      ...(outcome.renewed !== undefined ? { renewedAppSessionId: outcome.renewed } : {}),
    });
    res.redirect(302, returnTo);
  }

  /**
   * A native or CLI app's token endpoint (RFC 6749): `grant_type=authorization_code` (the
   * one-time code of its login, with the PKCE verifier) or `grant_type=refresh_token`, as a
   * form or JSON. Answers an access/refresh token pair, or an RFC 6749 §5.2 error (400).
   */
  @Public()
  @Post('token')
  async token(
    @Body() body: unknown,
    @Req() req: HttpRequestLike,
    @Res() res: ResponseLike,
  ): Promise<void> {
    await this.nativeEndpoint(res, async () => {
      const ua = req.headers['user-agent'];
      return this.native.token(body, typeof ua === 'string' ? ua : undefined);
    });
  }

  /** A native app's token revocation (RFC 7009): `token`, optional `token_type_hint`. */
  @Public()
  @Post('revoke')
  async revoke(@Body() body: unknown, @Res() res: ResponseLike): Promise<void> {
    await this.nativeEndpoint(res, async () => {
      await this.native.revokeToken(body);
      return {};
    });
  }

  private async nativeEndpoint(res: ResponseLike, fn: () => Promise<unknown>): Promise<void> {
    if (!this.native.enabled) throw new NotFoundException();
    for (const [name, value] of Object.entries(NATIVE_TOKEN_RESPONSE_HEADERS)) {
      res.setHeader(name, value);
    }
    try {
      res.status(200).json(await fn());
    } catch (error) {
      if (error instanceof AtProtoTokenError) return res.status(error.status).json(error.toJSON());
      throw toHttpException(error, 'login') ?? error;
    }
  }

  /**
   * Ends this app session; `?everywhere=1` ends every session of the user. The OAuth
   * session is revoked at the authorization server when the user's last app session ends.
   */
  @Public()
  @Post('logout')
  async logout(
    @Query('everywhere') everywhereQuery: unknown,
    @Body() body: Record<string, unknown> | undefined,
    @Req() req: HttpRequestLike,
    @Res() res: ResponseLike,
  ): Promise<void> {
    // A native app logs out with its access token (the header decides, as in the guard);
    // a browser with its cookie. The cross-site check protects cookies; a bearer token is not
    // sent by a browser on its own.
    const bearer = bearerToken(req);
    if (
      bearer === undefined &&
      isCrossSiteRequest(req, this.options.origin, this.options.trustedOrigins)
    ) {
      throw new ForbiddenException('Cross-site request refused.');
    }
    const everywhere = isTrue(everywhereQuery) || isTrue(body?.everywhere);
    const session =
      bearer !== undefined
        ? await this.call(async () => {
            const token = bearer ? await this.native.verifyAccessToken(bearer) : undefined;
            return token ? this.appSessions.validateId(token.appSessionId) : undefined;
          })
        : await this.call(() =>
            this.appSessions.validate(readCookie(req, this.options.cookie.sessionName)),
          );
    if (bearer !== undefined && !session) {
      // An app that thinks it is signing out must learn that nothing was ended (an expired
      // access token: sign out with the refresh token at POST revoke).
      res.setHeader('WWW-Authenticate', 'Bearer error="invalid_token"');
      throw new UnauthorizedException(
        'The access token is invalid, expired or revoked: nothing was signed out. Revoke the refresh token at POST revoke to end the session.',
      );
    }
    if (bearer === undefined) clearCookie(res, this.options, this.options.cookie.sessionName);
    if (session) {
      const startedAt = new Date();
      if (everywhere) await this.call(() => this.appSessions.revokeAll(session.did));
      else await this.call(() => this.appSessions.revoke(session.id));
      // The OAuth session goes with the user's last app session (or everywhere), decided
      // again under the user's session lock: a login elsewhere since this logout began
      // keeps its session.
      await this.auth
        .revoke(session.did, {
          since: startedAt,
          inUse: async () =>
            // Another device, an API key or a native login about to redeem its code still
            // uses it ("everywhere" ends the devices; keys then get "sign in again").
            (!everywhere && (await this.appSessions.hasActive(session.did))) ||
            (await this.apiKeys.hasActive(session.did)) ||
            (await this.native.hasPendingLogin(session.did)),
        })
        .catch((error: unknown) => {
          // Logged out here all the same; cleanup revokes the OAuth session on a later run.
          this.#logger.warn(
            `Logout: the OAuth session is left to cleanup: ${describeError(error)}`,
          );
        });
      this.events.emit({ type: 'logout', did: session.did, appSessionId: session.id, everywhere });
    }
    if (wantsHtml(req)) res.redirect(303, this.options.afterLogoutPath);
    else res.status(204).end();
  }

  private async login(
    fields: Record<string, unknown>,
    req: HttpRequestLike,
    res: ResponseLike,
    status: number,
  ): Promise<void> {
    // A native or CLI app's login (redirect_uri and PKCE), or undefined for a browser's.
    const request = await this.call(async () =>
      parseNativeLoginRequest(fields, this.options.native),
    );
    // A browser signed in here that asks for more scopes (the loginUrl of a 403
    // insufficient_scope) makes a step-up login: the same account must sign in.
    const stepUpOf =
      request === undefined && fields.scope !== undefined && fields.scope !== ''
        ? await this.call(() =>
            this.appSessions.validate(readCookie(req, this.options.cookie.sessionName)),
          )
        : undefined;
    const { url, bindingNonce } = await this.call(() =>
      this.auth.beginLogin(fields.input, {
        returnTo: fields.returnTo,
        scope: fields.scope,
        ...(request ? { native: toNativeLoginAppState(request) } : {}),
        ...(stepUpOf ? { expectedDid: stepUpOf.did } : {}),
      }),
    );
    // At most MAX_LOGIN_COOKIES logins under way per browser: starting one more drops the
    // oldest (its tab's callback is then refused and starts again).
    const logins = [...this.loginCookies(req)].sort((a, b) => a[1].startedAt - b[1].startedAt);
    for (const [name] of logins.slice(0, Math.max(0, logins.length - MAX_LOGIN_COOKIES + 1))) {
      clearCookie(res, this.options, name);
    }
    setCookie(
      res,
      this.options,
      loginCookieName(this.options.cookie.loginName, sha256(bindingNonce)),
      `${bindingNonce}.${Date.now().toString(36)}`,
      this.options.stateTtlMs,
    );
    res.redirect(status, url.href);
  }

  /** This browser's login cookies (name → nonce and start time), malformed ones skipped. */
  private loginCookies(req: HttpRequestLike): Map<string, { nonce: string; startedAt: number }> {
    const prefix = `${this.options.cookie.loginName}_`;
    const found = new Map<string, { nonce: string; startedAt: number }>();
    for (const [name, value] of Object.entries(readCookies(req))) {
      if (!name.startsWith(prefix) || value === undefined) continue;
      const match = /^([A-Za-z0-9_-]{43})\.([0-9a-z]{1,12})$/.exec(value);
      if (match) found.set(name, { nonce: match[1]!, startedAt: parseInt(match[2]!, 36) });
    }
    return found;
  }

  /** Maps the service's errors to HTTP answers that carry no internals. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw toHttpException(error, 'login') ?? error;
    }
  }
}

/** Logins under way at once in one browser (one cookie each). */
const MAX_LOGIN_COOKIES = 4;

/** The login cookie of one login: its name carries 8 characters of the nonce's hash. */
function loginCookieName(base: string, nonceHash: string): string {
  return `${base}_${nonceHash.slice(0, 8)}`;
}

function sha256(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('base64url');
}

/** What the callback did under the user's lock: a browser's app session, or a native code. */
type LoginOutcome =
  | ({ kind: 'browser'; renewed: string | undefined } & Awaited<
      ReturnType<AppSessionService['create']>
    >)
  | { kind: 'native'; url: URL; confirm: boolean };

/** The value of `Authorization: Bearer <value>`, if the request carries one. */
function bearerToken(req: HttpRequestLike): string | undefined {
  const value = req.headers.authorization;
  if (typeof value !== 'string' || !/^Bearer(?: |$)/i.test(value)) return undefined;
  // A Bearer header without a usable value is still a bearer request (refused), never a
  // fall back to the cookie.
  return /^Bearer +(\S+) *$/i.exec(value)?.[1] ?? '';
}

function isTrue(value: unknown): boolean {
  return value === '1' || value === 'true' || value === true;
}

/**
 * The routes under `prefix`.
 * @internal
 */
export function createOAuthController(prefix: string): Type<OAuthControllerBase> {
  class AtProtoOAuthController extends OAuthControllerBase {}
  Controller(prefix)(AtProtoOAuthController);
  return AtProtoOAuthController;
}
