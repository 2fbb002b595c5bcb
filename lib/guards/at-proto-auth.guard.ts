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
  constructor(
    private readonly reflector: Reflector,
    private readonly appSessions: AppSessionService,
    private readonly auth: AtProtoAuthService,
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    private readonly native: AtProtoNativeService,
    private readonly apiKeys: AtProtoApiKeyService,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const targets = [context.getHandler(), context.getClass()];
    const isPublicHandler = () =>
      this.reflector.getAllAndOverride<boolean | undefined>(AT_PROTO_PUBLIC_KEY, targets);
    if (context.getType() !== 'http') {
      // Fail closed: this guard only understands HTTP requests. A global guard that waved
      // GraphQL resolvers or microservice handlers through would leave them open.
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
    const isPublic = isPublicHandler() === true;
    const route = this.reflector.getAllAndOverride<AtProtoCredentialsOptions | undefined>(
      AT_PROTO_CREDENTIALS_KEY,
      targets,
    );
    const allow = route?.allow ?? this.options.credentialsAllow;

    let found: Authenticated | undefined;
    try {
      found = await this.authenticate(req, context, allow, route?.scopes ?? [], isPublic);
    } catch (error) {
      // The database is unreachable (retries exhausted): say so (503), rather than a 500.
      throw toHttpException(error, 'session') ?? error;
    }
    if (!found) return true; // a public route, without a (valid) credential
    let restored: Promise<OAuthSession> | undefined;
    const { did, appSessionId } = found;
    const auth: AtProtoRequestAuth = {
      ...found,
      appSessionId,
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

  /** The request's credential, checked; undefined on a public route without a valid one. */
  private async authenticate(
    req: HttpRequestLike,
    context: ExecutionContext,
    allow: readonly AtProtoCredentialKind[],
    scopes: readonly string[],
    isPublic: boolean,
  ): Promise<Authenticated | undefined> {
    const authorization = req.headers.authorization;
    // Only the Bearer scheme is the module's: another one (a staging proxy's Basic auth,
    // which browsers resend on their own) leaves the cookie in charge, cross-site check
    // included.
    if (typeof authorization === 'string' && /^Bearer(?: |$)/i.test(authorization)) {
      const bearer = BEARER.exec(authorization);
      const value = bearer?.[1];
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
        const key = await this.apiKeys.validate(value);
        if (!key)
          return this.refuse(
            context,
            isPublic,
            'invalid_token',
            'This API key is unknown, revoked or expired.',
          );
        if (!apiKeyHasScopes(key, scopes)) {
          if (isPublic) return undefined;
          throw new ForbiddenException(
            `This API key lacks a scope this route requires (${scopes.join(', ')}).`,
          );
        }
        return { did: key.did, credential: 'api-key', apiKeyId: key.id };
      }
      const token = await this.native.verifyAccessToken(value);
      const session = token ? await this.appSessions.validateId(token.appSessionId) : undefined;
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

    const cookie = readCookie(req, this.options.cookie.sessionName);
    const session = cookie ? await this.appSessions.validate(cookie) : undefined;
    if (!session) {
      if (isPublic) return undefined;
      throw new UnauthorizedException(AT_PROTO_MESSAGES.signIn);
    }
    if (!allow.includes('cookie')) {
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
