import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpStatus,
  Injectable,
  Logger,
} from '@nestjs/common';
import { AT_PROTO_REQUEST_KEY } from '../at-proto.constants.js';
import {
  endedSessionDid,
  findMappedError,
  isSessionEndedError,
} from '../errors/to-http-exception.js';
import type { AtProtoRequestAuth } from '../guards/at-proto-request-auth.js';
import { AppSessionService } from '../session/app-session.service.js';
import { describeError } from '../errors/describe-error.js';

export { isSessionEndedError };

interface ResponseLike {
  status(code: number): { json(body: unknown): void };
  headersSent?: boolean;
}

/**
 * Matches, for `@Catch()`, the errors the module answers: its own session errors and the
 * OAuth client's "session ended" errors, also when wrapped (`cause` chains, an
 * `AggregateError`). Nest picks a filter by `exception instanceof <each caught type>`, which
 * consults `Symbol.hasInstance`: so the filter is chosen for exactly those errors, and every
 * other one (an `XRPCError` about something else included) still reaches the app's filters.
 * Why not an interceptor: a global interceptor puts every route of the app through Nest's
 * interceptor pipeline (rxjs), which cost more than the whole guard (docs/benchmarks.md);
 * a filter costs nothing until an error is thrown.
 */
class MappedSessionError {
  static [Symbol.hasInstance](value: unknown): boolean {
    return handles(value);
  }
}

function handles(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  try {
    return findMappedError(error, 'session') !== undefined;
  } catch {
    return false; // a `cause` getter that throws: not the module's error
  }
}

/**
 * Answers the session errors that escape a handler — typically thrown by
 * `session.fetchHandler()`, or by an `Agent` built on it (which wraps them in an `XRPCError`),
 * in your code — with a clear JSON error instead of a 500, wherever they are in the error's
 * cause chain: 401 when the OAuth session has ended, 503 when the session lock, the module's
 * storage or the user's servers cannot be reached right now. When the ended session is the
 * requesting user's own, this device's app session is ended too, so that the next request is
 * plainly signed out; a handler that used another DID's session (a bot account, a service
 * account) does not sign its caller out. Registered globally by the module (`APP_FILTER`);
 * other errors are not touched and reach the app's own filters.
 *
 * When the app has exception filters of its own, which Nest may try first or which expect an
 * `HttpException`, the module also registers an interceptor that maps these errors before
 * any filter sees them (see docs/security.md, "Errors and what they answer").
 * @publicApi
 */
@Catch(MappedSessionError)
@Injectable()
export class AtProtoExceptionFilter implements ExceptionFilter {
  readonly #logger = new Logger('AtProtoAuth');

  constructor(private readonly appSessions: AppSessionService) {}

  /**
   * Whether `error` is one the filter answers: a session error of the module (or the OAuth
   * client's "session ended"), itself or anywhere in its cause chain, and not inside an
   * `HttpException` (which already says what to answer).
   */
  static handles(error: unknown): boolean {
    return handles(error);
  }

  async catch(error: Error, host: ArgumentsHost): Promise<void> {
    if (host.getType() !== 'http') throw error;
    const found = findMappedError(error, 'session');
    if (!found) throw error;
    const http = host.switchToHttp();
    const res = http.getResponse<ResponseLike>();
    if (res.headersSent) return;
    const status = found.exception.getStatus();
    if (status === HttpStatus.UNAUTHORIZED) {
      const auth = http.getRequest<Record<string, unknown>>()[AT_PROTO_REQUEST_KEY] as
        AtProtoRequestAuth | undefined;
      if (auth?.appSessionId && endedSessionDid(found.error) === auth.did) {
        await this.appSessions.revoke(auth.appSessionId).catch(() => undefined);
      }
    } else if (status >= 500) {
      this.#logger.warn(
        `A request could not use the AT Protocol session: ${describeError(found.error)}`,
      );
    }
    res.status(status).json(found.exception.getResponse());
  }
}
