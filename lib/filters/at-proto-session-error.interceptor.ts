import {
  type CallHandler,
  type ExecutionContext,
  HttpException,
  Injectable,
  Logger,
  type NestInterceptor,
} from '@nestjs/common';
import { catchError, from, type Observable } from 'rxjs';
import { AtProtoSessionUnavailableError } from '../errors/at-proto-http.errors.js';
import { describeError } from '../errors/describe-error.js';
import {
  AT_PROTO_MESSAGES,
  endedSessionDid,
  findMappedError,
  toHttpException,
} from '../errors/to-http-exception.js';
import { type RequestOutcome, requestOutcome } from '../oauth/request-outcome.js';
import { getRequestAuth } from '../guards/at-proto-request-auth.js';
import { AppSessionService } from '../session/app-session.service.js';

/**
 * Turns session errors that escape a handler into clear answers, wherever they are in the
 * error's cause chain: 401 when the OAuth session has ended, 503 when the session lock, the
 * module's storage or the user's servers cannot be used right now. Libraries wrap the errors
 * of what they call: an `Agent` from `@atproto/api` turns every error of
 * `session.fetchHandler()` into an `XRPCError` whose `cause` is the module's, which an
 * exception filter matching by class never sees (a 500). When the ended session is the
 * requesting user's own, this device's app session is ended too, so that the next request is
 * plainly signed out; a handler acting as another DID does not sign its caller out.
 *
 * An interceptor rather than a catch-all exception filter: other errors pass through
 * untouched, to the app's own filters.
 * @internal
 */
@Injectable()
export class AtProtoSessionErrorInterceptor implements NestInterceptor {
  readonly #logger = new Logger('AtProtoAuth');

  constructor(private readonly appSessions: AppSessionService) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const outcome: RequestOutcome = { deleted: new Set(), refreshFailures: new Map() };
    // handle() is called inside the scope: Nest binds the handler to the async context of
    // that call, so everything the handler does records into `outcome`.
    return requestOutcome.run(outcome, () =>
      next.handle().pipe(catchError((error: unknown) => from(this.#map(error, context, outcome)))),
    );
  }

  async #map(error: unknown, context: ExecutionContext, outcome: RequestOutcome): Promise<never> {
    const found = findMappedError(error, 'session') ?? this.#hidden(error, context, outcome);
    if (!found) throw error;
    const status = found.exception.getStatus();
    if (status === 401) {
      const auth = getRequestAuth(context.switchToHttp().getRequest());
      if (auth?.appSessionId && endedSessionDid(found.error) === auth.did) {
        await this.appSessions.revoke(auth.appSessionId).catch(() => undefined);
      }
    } else if (status >= 500) {
      this.#logger.warn(
        `A request could not use the AT Protocol session: ${describeError(found.error)}`,
      );
    }
    throw found.exception;
  }

  /**
   * A PDS call through the session that got a 401 after the session's own retry: the OAuth
   * client returns that 401 (an `XRPCError` with status 401 from an `Agent`) instead of the
   * error of its refresh. What the refresh did was recorded during this request (see
   * request-outcome.ts): the client deleted the requesting user's session (it has ended:
   * 401), or the refresh failed for a reason of the moment (503). Any other 401 (the app's
   * own, another service's) is not the module's business.
   */
  #hidden(
    error: unknown,
    context: ExecutionContext,
    outcome: RequestOutcome,
  ): { error: unknown; exception: HttpException } | undefined {
    if (error instanceof HttpException) return undefined;
    if ((error as { status?: unknown } | null)?.status !== 401) return undefined;
    const auth = getRequestAuth(context.switchToHttp().getRequest());
    if (!auth) return undefined;
    if (outcome.deleted.has(auth.did)) {
      const ended = new AtProtoSessionUnavailableError(AT_PROTO_MESSAGES.sessionEnded, {
        cause: error,
        did: auth.did,
      });
      return { error: ended, exception: toHttpException(ended, 'session')! };
    }
    const failure = outcome.refreshFailures.get(auth.did);
    return failure === undefined ? undefined : findMappedError(failure, 'session');
  }
}
