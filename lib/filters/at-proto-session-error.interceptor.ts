import {
  type CallHandler,
  type ExecutionContext,
  Injectable,
  Logger,
  type NestInterceptor,
} from '@nestjs/common';
import { catchError, from, type Observable } from 'rxjs';
import { describeError } from '../errors/describe-error.js';
import { endedSessionDid, findMappedError } from '../errors/to-http-exception.js';
import { getRequestAuth } from '../guards/at-proto-request-auth.js';
import { AppSessionService } from '../session/app-session.service.js';

/**
 * Turns the session errors that escape a handler (wherever they are in the error's cause
 * chain) into the `HttpException` the module's filter would answer with, before any
 * exception filter sees them, and ends the caller's app session when its own OAuth session
 * has ended. Registered as a global interceptor only for apps that have exception filters of
 * their own (see `AtProtoSessionErrorsModule`): those filters may be tried before the
 * module's (scoped to a controller or method, `app.useGlobalFilters()`, an `APP_FILTER`
 * registered after the module's) or expect an `HttpException` (a page that sends browsers
 * to the login page on a 401), and got one before filters ran in every earlier release.
 * Without filters of the app, the module's `AtProtoExceptionFilter` does the same work at
 * no cost per request, which an interceptor cannot (Nest's interceptor pipeline).
 * @internal
 */
@Injectable()
export class AtProtoSessionErrorInterceptor implements NestInterceptor {
  readonly #logger = new Logger('AtProtoAuth');

  constructor(private readonly appSessions: AppSessionService) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    return next.handle().pipe(catchError((error: unknown) => from(this.#map(error, context))));
  }

  async #map(error: unknown, context: ExecutionContext): Promise<never> {
    const found = findMappedError(error, 'session');
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
}
