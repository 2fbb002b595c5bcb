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
  AT_PROTO_OPTIONS,
  AT_PROTO_PUBLIC_KEY,
  AT_PROTO_REQUEST_KEY,
} from '../at-proto.constants.js';
import { AtProtoSessionUnavailableError } from '../errors/at-proto-http.errors.js';
import { AT_PROTO_MESSAGES, toHttpException } from '../errors/to-http-exception.js';
import { AtProtoAuthService } from '../oauth/at-proto-auth.service.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { AppSessionService } from '../session/app-session.service.js';
import { type HttpRequestLike, isCrossSiteRequest, readCookie } from '../session/http.util.js';
import { AT_PROTO_GUARD_SEEN, type AtProtoRequestAuth } from './at-proto-request-auth.js';

/**
 * Authenticates a request by its app-session cookie and attaches the user's DID
 * (`@AtProtoDid()`) and a lazy OAuth-session restore (`@AtProtoSession()`). Only the app
 * session is checked here: the OAuth session is restored when a handler asks for it, never
 * on every request. Routes marked `@Public()` pass without a session. A cookie-authenticated
 * POST/PUT/PATCH/DELETE from another site is refused (403).
 *
 * Registered globally by default (`globalGuard`); otherwise use `@UseGuards(AtProtoAuthGuard)`.
 * @publicApi
 */
@Injectable()
export class AtProtoAuthGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly appSessions: AppSessionService,
    private readonly auth: AtProtoAuthService,
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const isPublicHandler = () =>
      this.reflector.getAllAndOverride<boolean | undefined>(AT_PROTO_PUBLIC_KEY, [
        context.getHandler(),
        context.getClass(),
      ]);
    if (context.getType() !== 'http') {
      // Fail closed: this guard only understands HTTP requests with cookies. A global guard
      // that waved GraphQL resolvers or microservice handlers through would leave them open.
      if (isPublicHandler()) return true;
      throw new ForbiddenException(
        `AtProtoAuthGuard only authenticates HTTP requests; mark this ${context.getType()} ` +
          'handler @Public() and protect it with a guard of its own.',
      );
    }
    const req = context.switchToHttp().getRequest<HttpRequestLike>();
    // Registered globally and with @UseGuards: authenticate once.
    if (req[AT_PROTO_REQUEST_KEY]) return true;
    req[AT_PROTO_GUARD_SEEN as unknown as string] = true;
    const isPublic = isPublicHandler();

    const token = readCookie(req, this.options.cookie.sessionName);
    let session;
    try {
      session = token ? await this.appSessions.validate(token) : undefined;
    } catch (error) {
      // The database is unreachable (retries exhausted): say so (503), rather than a 500.
      throw toHttpException(error, 'session') ?? error;
    }
    if (!session) {
      if (isPublic) return true;
      throw new UnauthorizedException(AT_PROTO_MESSAGES.signIn);
    }
    if (isCrossSiteRequest(req, this.options.origin, this.options.trustedOrigins)) {
      // On a public route the request simply proceeds without the user's identity.
      if (isPublic) return true;
      throw new ForbiddenException(AT_PROTO_MESSAGES.crossSite);
    }
    let restored: Promise<OAuthSession> | undefined;
    const auth: AtProtoRequestAuth = {
      did: session.did,
      credential: 'cookie',
      appSessionId: session.id,
      restore: () =>
        (restored ??= this.auth.restore(session.did).catch(async (error: unknown) => {
          // The OAuth session has ended for good (revoked, refresh refused): this device's
          // app session cannot act as the user any more, so end it too. The next request is
          // then plainly signed out instead of looping between "signed in" and 401.
          if (error instanceof AtProtoSessionUnavailableError) {
            await this.appSessions.revoke(session.id).catch(() => undefined);
          }
          throw error;
        })),
    };
    req[AT_PROTO_REQUEST_KEY] = auth;
    return true;
  }
}
