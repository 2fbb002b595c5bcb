import {
  BadGatewayException,
  BadRequestException,
  Body,
  Controller,
  ForbiddenException,
  Get,
  Header,
  HttpException,
  Inject,
  NotFoundException,
  Post,
  Query,
  Req,
  Res,
  type Type,
} from '@nestjs/common';
import { AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { Public } from '../decorators/public.decorator.js';
import { AtProtoBadRequestError, AtProtoUpstreamError } from '../errors/at-proto-http.errors.js';
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
  setCookie,
  wantsHtml,
} from '../session/http.util.js';
import { AtProtoAuthService } from './at-proto-auth.service.js';

/** The parts of an Express response the routes use. @internal */
interface ResponseLike extends HttpResponseLike {
  redirect(status: number, url: string): void;
  status(code: number): { end(): void };
}

/**
 * The module's routes: client metadata, JWKS, login, callback, logout. The path prefix is
 * only known when the module is defined, so the class is subclassed and decorated with
 * `@Controller(prefix)` by {@link createOAuthController}.
 * @internal
 */
export class OAuthControllerBase {
  constructor(
    @Inject(AT_PROTO_OPTIONS) protected readonly options: ResolvedAtProtoOptions,
    protected readonly auth: AtProtoAuthService,
    protected readonly appSessions: AppSessionService,
    protected readonly events: AtProtoEvents,
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
    @Query('input') input: unknown,
    @Query('returnTo') returnTo: unknown,
    @Req() req: HttpRequestLike,
    @Res() res: ResponseLike,
  ): Promise<void> {
    // Another site must not start a login in the user's browser (login CSRF: the attacker's
    // own account, consented on the attacker's server, would end signed in here). Links and
    // bookmarks (Sec-Fetch-Site: none) and the app's own pages are fine.
    if (isCrossSiteNavigation(req)) {
      throw new ForbiddenException(
        'Logins must start from this app. Open the login page here and try again.',
      );
    }
    await this.login(input, returnTo, res, 302);
  }

  /** Starts a login from a form post (`input`, `returnTo` fields). */
  @Public()
  @Post('login')
  async loginPost(
    @Body() body: Record<string, unknown> | undefined,
    @Req() req: HttpRequestLike,
    @Res() res: ResponseLike,
  ): Promise<void> {
    // A cross-site form could start a login the attacker controls (login CSRF): refuse it.
    if (isCrossSiteRequest(req, this.options.origin)) {
      throw new ForbiddenException('Cross-site request refused.');
    }
    await this.login(body?.input, body?.returnTo, res, 303);
  }

  /** The authorization server sends the browser back here. */
  @Public()
  @Get('callback')
  async callback(
    @Req() req: HttpRequestLike & { url?: string },
    @Res() res: ResponseLike,
  ): Promise<void> {
    const params = new URL(req.url ?? '', 'http://callback.invalid').searchParams;
    const nonce = readCookie(req, this.options.cookie.loginName);
    const { did, returnTo } = await this.call(() => this.auth.completeLogin(params, nonce));
    const userAgent = req.headers['user-agent'];
    const { token, session } = await this.appSessions.create(
      did,
      typeof userAgent === 'string' ? userAgent : undefined,
    );
    setCookie(
      res,
      this.options,
      this.options.cookie.sessionName,
      token,
      this.options.appSession.absoluteTtlMs,
    );
    clearCookie(res, this.options, this.options.cookie.loginName);
    this.events.emit({ type: 'login', did, appSessionId: session.id });
    res.redirect(302, returnTo);
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
    if (isCrossSiteRequest(req, this.options.origin)) {
      throw new ForbiddenException('Cross-site request refused.');
    }
    const everywhere = isTrue(everywhereQuery) || isTrue(body?.everywhere);
    const session = await this.appSessions.validate(
      readCookie(req, this.options.cookie.sessionName),
    );
    clearCookie(res, this.options, this.options.cookie.sessionName);
    if (session) {
      if (everywhere) {
        await this.appSessions.revokeAll(session.did);
        await this.auth.revoke(session.did);
      } else {
        await this.appSessions.revoke(session.id);
        if (!(await this.appSessions.hasActive(session.did))) await this.auth.revoke(session.did);
      }
      this.events.emit({ type: 'logout', did: session.did, appSessionId: session.id, everywhere });
    }
    if (wantsHtml(req)) res.redirect(303, this.options.afterLogoutPath);
    else res.status(204).end();
  }

  private async login(
    input: unknown,
    returnTo: unknown,
    res: ResponseLike,
    status: number,
  ): Promise<void> {
    const { url, bindingNonce } = await this.call(() => this.auth.beginLogin(input, { returnTo }));
    setCookie(
      res,
      this.options,
      this.options.cookie.loginName,
      bindingNonce,
      this.options.stateTtlMs,
    );
    res.redirect(status, url.href);
  }

  /** Maps the service's errors to HTTP answers that carry no internals. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      if (error instanceof AtProtoBadRequestError) throw new BadRequestException(error.message);
      if (error instanceof AtProtoUpstreamError) throw new BadGatewayException(error.message);
      if (error instanceof HttpException) throw error;
      throw error;
    }
  }
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
