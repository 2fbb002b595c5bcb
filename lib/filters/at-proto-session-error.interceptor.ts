import {
  type CallHandler,
  type ExecutionContext,
  type HttpException,
  Inject,
  Injectable,
  Logger,
  type NestInterceptor,
} from '@nestjs/common';
import { catchError, from, type Observable } from 'rxjs';
import { AT_PROTO_SESSION_STORE } from '../at-proto.constants.js';
import { AtProtoSessionUnavailableError } from '../errors/at-proto-http.errors.js';
import { describeError } from '../errors/describe-error.js';
import {
  AT_PROTO_MESSAGES,
  endedSessionDid,
  findMappedError,
  toHttpException,
} from '../errors/to-http-exception.js';
import type { AtProtoSessionStore } from '../storage/store.interface.js';
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

  constructor(
    private readonly appSessions: AppSessionService,
    @Inject(AT_PROTO_SESSION_STORE) private readonly sessionStore: AtProtoSessionStore,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    return next.handle().pipe(catchError((error: unknown) => from(this.#map(error, context))));
  }

  async #map(error: unknown, context: ExecutionContext): Promise<never> {
    const found =
      findMappedError(error, 'session') ?? (await this.#endedDuringCall(error, context));
    if (!found) throw error;
    const status = found.exception.getStatus();
    if (status === 401) {
      const auth = getRequestAuth(context.switchToHttp().getRequest());
      if (auth?.appSessionId && endedSessionDid(found.error) === auth.did) {
        await this.appSessions.revoke(auth.appSessionId).catch(() => undefined);
      }
    } else {
      this.#logger.warn(
        `A request could not use the AT Protocol session: ${describeError(found.error)}`,
      );
    }
    throw found.exception;
  }

  /**
   * A PDS call through the session that got a 401 after the session's own retry: the
   * OAuth client then returns that 401 (an `XRPCError` with status 401 from an `Agent`),
   * having deleted a session whose refresh was refused. If the requesting user's OAuth
   * session is gone, that is what happened: the session has ended.
   */
  async #endedDuringCall(
    error: unknown,
    context: ExecutionContext,
  ): Promise<{ error: unknown; exception: HttpException } | undefined> {
    if ((error as { status?: unknown } | null)?.status !== 401) return undefined;
    const auth = getRequestAuth(context.switchToHttp().getRequest());
    if (!auth) return undefined;
    const stored = await this.sessionStore.get(auth.did).catch(() => 'unknown' as const);
    if (stored !== undefined) return undefined;
    const ended = new AtProtoSessionUnavailableError(AT_PROTO_MESSAGES.sessionEnded, {
      cause: error,
      did: auth.did,
    });
    return { error: ended, exception: toHttpException(ended, 'session')! };
  }
}
