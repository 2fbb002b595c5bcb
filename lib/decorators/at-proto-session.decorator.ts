import {
  createParamDecorator,
  type ExecutionContext,
  type PipeTransform,
  ServiceUnavailableException,
  UnauthorizedException,
} from '@nestjs/common';
import type { OAuthSession } from '@atproto/oauth-client-node';
import { AT_PROTO_MESSAGES, toHttpException } from '../errors/to-http-exception.js';
import type { AtProtoRequestAuth } from '../guards/at-proto-request-auth.js';
import { requestAuth } from './request-auth.util.js';

// Param decorators are synchronous, restoring is not: the decorator hands the request's
// auth to a pipe, and Nest awaits pipes before calling the handler. The pipe is passed as
// an instance, so it needs no provider in the user's module.
class AtProtoSessionPipe implements PipeTransform<
  AtProtoRequestAuth | undefined,
  Promise<OAuthSession>
> {
  async transform(auth: AtProtoRequestAuth | undefined): Promise<OAuthSession> {
    if (!auth) throw new UnauthorizedException(AT_PROTO_MESSAGES.signIn);
    try {
      return await auth.restore();
    } catch (error) {
      throw (
        toHttpException(error, 'session') ??
        new ServiceUnavailableException(AT_PROTO_MESSAGES.sessionUnusable, { cause: error })
      );
    }
  }
}

const authParam = createParamDecorator((_: unknown, ctx: ExecutionContext) =>
  requestAuth(ctx, 'AtProtoSession'),
);

/**
 * Injects the signed-in user's live `OAuthSession` (from `@atproto/oauth-client-node`),
 * refreshed first if its access token is stale; use it to call the user's PDS (e.g.
 * `new Agent(session)` from `@atproto/api`, or `session.fetchHandler(path)`). Restoring
 * takes the session lock, so only handlers that ask for it pay for it.
 * Answers 401 when the OAuth session has ended (the user must log in again) and 503
 * when it cannot be restored right now.
 * @example profile(\@AtProtoSession() session: OAuthSession) { ... }
 * @publicApi
 */
export function AtProtoSession(): ParameterDecorator {
  return authParam(undefined, new AtProtoSessionPipe());
}
