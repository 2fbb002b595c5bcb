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
  AtProtoUnavailableError,
  AtProtoUpstreamError,
} from '../errors/at-proto-http.errors.js';
import { AtProtoStoreError } from '../errors/at-proto-store.error.js';
import {
  AT_PROTO_MESSAGES,
  endedSessionDid,
  isSessionEndedError,
  toHttpException,
} from '../errors/to-http-exception.js';
import type { AtProtoRequestAuth } from '../guards/at-proto-request-auth.js';
import { AtProtoLockError } from '../errors/at-proto-lock.error.js';
import { AppSessionService } from '../session/app-session.service.js';
import { describeError } from '../errors/describe-error.js';

export { isSessionEndedError };

interface ResponseLike {
  status(code: number): { json(body: unknown): void };
  headersSent?: boolean;
}

/**
 * Answers the session errors that escape a handler — typically thrown by
 * `session.fetchHandler()` (or an `Agent` built on it) in your code — with a clear JSON
 * error instead of a 500: 401 when the OAuth session has ended, 503 when the session lock,
 * the module's storage or the user's servers cannot be reached right now. When the ended
 * session is the requesting user's own, this device's app session is ended too, so that the
 * next request is plainly signed out; a handler that used another DID's session (a bot
 * account, a service account) does not sign its caller out. Registered globally by the
 * module; other errors are not touched.
 * @publicApi
 */
@Catch(
  AtProtoSessionUnavailableError,
  AtProtoUpstreamError,
  AtProtoUnavailableError,
  AtProtoLockError,
  AtProtoStoreError,
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
      if (auth?.appSessionId && endedSessionDid(error) === auth.did) {
        await this.appSessions.revoke(auth.appSessionId).catch(() => undefined);
      }
    } else {
      this.#logger.warn(`A request could not use the AT Protocol session: ${describeError(error)}`);
    }
    const exception = toHttpException(error, 'session');
    const status = exception?.getStatus() ?? HttpStatus.SERVICE_UNAVAILABLE;
    res.status(status).json(
      exception?.getResponse() ?? {
        statusCode: status,
        error: 'Service Unavailable',
        message: AT_PROTO_MESSAGES.sessionUnusable,
      },
    );
  }
}
