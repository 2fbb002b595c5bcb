import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpStatus,
  Injectable,
  Logger,
} from '@nestjs/common';
import {
  TokenInvalidError,
  TokenRefreshError,
  TokenRevokedError,
} from '@atproto/oauth-client-node';
import { AT_PROTO_REQUEST_KEY } from '../at-proto.constants.js';
import {
  AtProtoSessionUnavailableError,
  AtProtoUpstreamError,
} from '../errors/at-proto-http.errors.js';
import type { AtProtoRequestAuth } from '../guards/at-proto-request-auth.js';
import { AtProtoLockError } from '../lock/redlock-request-lock.js';
import { AppSessionService } from '../session/app-session.service.js';
import { describeError } from '../errors/describe-error.js';

/**
 * Whether an error means the user's OAuth session has ended for good (revoked, refresh
 * refused, deleted): the user must log in again. Use it around your own XRPC calls.
 * @publicApi
 */
export function isSessionEndedError(error: unknown): boolean {
  return (
    error instanceof AtProtoSessionUnavailableError ||
    error instanceof TokenRefreshError ||
    error instanceof TokenRevokedError ||
    error instanceof TokenInvalidError
  );
}

interface ResponseLike {
  status(code: number): { json(body: unknown): void };
  headersSent?: boolean;
}

/**
 * Answers the session errors that escape a handler — typically thrown by
 * `session.fetchHandler()` (or an `Agent` built on it) in your code — with a clear JSON
 * error instead of a 500: 401 when the OAuth session has ended (and this device's app
 * session is ended too, so the next request is plainly signed out), 503 when the session
 * lock or the user's servers cannot be reached right now. Registered globally by the module;
 * other errors are not touched.
 * @publicApi
 */
@Catch(
  AtProtoSessionUnavailableError,
  AtProtoUpstreamError,
  AtProtoLockError,
  TokenRefreshError,
  TokenRevokedError,
  TokenInvalidError,
)
@Injectable()
export class AtProtoExceptionFilter implements ExceptionFilter {
  readonly #logger = new Logger('AtProtoAuth');

  constructor(private readonly appSessions: AppSessionService) {}

  async catch(error: Error, host: ArgumentsHost): Promise<void> {
    if (host.getType() !== 'http') throw error;
    const http = host.switchToHttp();
    const res = http.getResponse<ResponseLike>();
    if (res.headersSent) return;
    if (isSessionEndedError(error)) {
      const auth = http.getRequest<Record<string, unknown>>()[AT_PROTO_REQUEST_KEY] as
        AtProtoRequestAuth | undefined;
      if (auth) await this.appSessions.revoke(auth.appSessionId).catch(() => undefined);
      res.status(HttpStatus.UNAUTHORIZED).json({
        statusCode: HttpStatus.UNAUTHORIZED,
        error: 'Unauthorized',
        message: 'The AT Protocol session has ended. Log in again.',
      });
      return;
    }
    this.#logger.warn(`A request could not use the AT Protocol session: ${describeError(error)}`);
    res.status(HttpStatus.SERVICE_UNAVAILABLE).json({
      statusCode: HttpStatus.SERVICE_UNAVAILABLE,
      error: 'Service Unavailable',
      message:
        error instanceof AtProtoLockError || error instanceof AtProtoUpstreamError
          ? error.message
          : 'The AT Protocol session could not be used right now. Try again.',
    });
  }
}
