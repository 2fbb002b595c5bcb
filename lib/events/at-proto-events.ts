import { Injectable, Logger } from '@nestjs/common';
import {
  Observable,
  type Observer,
  type Operator,
  Subject,
  Subscriber,
  type Subscription,
} from 'rxjs';
import { describeError, sanitizeLogText } from '../errors/describe-error.js';

/**
 * Why an OAuth session was deleted.
 * - `logout`: revoked because the user logged out (last device, or everywhere).
 * - `replaced`: a new login of the same user replaced it.
 * - `revoked`: the server revoked it, or it was revoked by another path.
 * - `refresh-failed`: the refresh token was refused (expired, or used twice).
 * - `invalid`: the server says the tokens are invalid.
 * - `signing-key-removed`: the signing key (`kid`) it was bound to is no longer configured.
 * - `error`: another failure; see `message`.
 * @publicApi
 */
export type AtProtoSessionDeletedReason =
  | 'logout'
  | 'replaced'
  | 'revoked'
  | 'refresh-failed'
  | 'invalid'
  | 'signing-key-removed'
  | 'error';

/**
 * Why a bot's app-password session ended (its row is deleted; the bot must log in again).
 * - `expired`: the PDS refused the refresh JWT as expired or revoked (`ExpiredToken`), e.g.
 *   after its app password was deleted;
 * - `invalid`: the PDS refused the refresh JWT as invalid (`InvalidToken`);
 * - `account-takedown`, `account-deactivated`: the account's state;
 * - `replaced`: a forced `login()` replaced it;
 * - `logout`: `logout()` ended it.
 * @publicApi
 */
export type AtProtoBotSessionEndedReason =
  'expired' | 'invalid' | 'account-takedown' | 'account-deactivated' | 'replaced' | 'logout';

/**
 * Events the module emits. Subscribe with `AtProtoEvents.events$`.
 * @publicApi
 */
export type AtProtoEvent =
  | {
      type: 'login';
      did: string;
      appSessionId: string;
      /**
       * A step-up login (more scopes, `@AtProtoScope()`): the browser's previous app session,
       * ended and replaced by `appSessionId`.
       */
      renewedAppSessionId?: string;
    }
  | { type: 'logout'; did: string; appSessionId: string; everywhere: boolean }
  | { type: 'oauth-session-created'; did: string }
  | { type: 'oauth-session-refreshed'; did: string }
  | {
      type: 'oauth-session-deleted';
      did: string;
      reason: AtProtoSessionDeletedReason;
      /**
       * A short description of the cause, without secrets. It may quote the authorization
       * server: control, line-separator and bidi characters are escaped as `\uXXXX` and it
       * is at most 500 characters long.
       */
      message?: string;
    }
  | {
      /**
       * A native app presented a refresh token that was already rotated (outside the short
       * grace for a retry): possibly a stolen token. Its app session (the device) and all its
       * tokens were ended.
       */
      type: 'native-refresh-reuse';
      did: string;
      appSessionId: string;
    }
  | {
      /**
       * A write (`set`) or delete (`del`) of the OAuth session by a holder of the session
       * lock was refused because the session changed since that holder read it: the holder
       * had lost the lock (a stalled process, a Redis failover). The newer session is kept.
       */
      type: 'oauth-session-write-fenced';
      did: string;
      operation: 'set' | 'del';
    }
  | { type: 'bot-session-created'; did: string }
  | { type: 'bot-session-refreshed'; did: string }
  | {
      /** A bot's app-password session ended: its row is deleted. */
      type: 'bot-session-ended';
      did: string;
      reason: AtProtoBotSessionEndedReason;
      /** The PDS's error text, sanitized as for `oauth-session-deleted`, if any. */
      message?: string;
    };

/** Where an isolated stream reports what a subscriber threw. */
type Report = (error: unknown, value: unknown, ended: boolean) => void;

/**
 * An Observable whose subscribers cannot hurt each other or the process. RxJS reports an error
 * thrown by a subscriber (or an operator error that reaches a subscriber without an error
 * handler) as an unhandled error, rethrown from a timer: in Node, a crash. Here every
 * subscriber's callbacks run inside a try/catch and such errors are logged instead. `lift`
 * is overridden so that piped streams (`events$.pipe(filter(...))`) are isolated too.
 */
class IsolatedStream<T> extends Observable<T> {
  readonly #report: Report;

  constructor(report: Report) {
    super();
    this.#report = report;
  }

  override lift<R>(operator?: Operator<T, R>): Observable<R> {
    const lifted = new IsolatedStream<R>(this.#report);
    lifted.source = this;
    lifted.operator = operator;
    return lifted;
  }

  override subscribe(observerOrNext?: Partial<Observer<T>> | ((value: T) => void)): Subscription;
  /** @deprecated Pass an observer, as RxJS 8 will require. */
  override subscribe(
    next?: ((value: T) => void) | null,
    error?: ((error: unknown) => void) | null,
    complete?: (() => void) | null,
  ): Subscription;
  override subscribe(
    observerOrNext?: Partial<Observer<T>> | ((value: T) => void) | null,
    error?: ((error: unknown) => void) | null,
    complete?: (() => void) | null,
  ): Subscription {
    // A Subscriber is a link of an operator chain (or of firstValueFrom): it handles its own
    // errors, and wrapping it would cut the chain's unsubscription. Pass it through.
    if (observerOrNext instanceof Subscriber) return super.subscribe(observerOrNext);
    const observer: Partial<Observer<T>> =
      typeof observerOrNext === 'function' || observerOrNext == null
        ? {
            next: observerOrNext ?? undefined,
            error: error ?? undefined,
            complete: complete ?? undefined,
          }
        : observerOrNext;
    const report = this.#report;
    return super.subscribe({
      next(value) {
        try {
          // An async subscriber returns a promise: its rejection is the same bug as a throw,
          // and unhandled it would end the process too.
          const result: unknown = observer.next?.(value);
          if (result && typeof (result as PromiseLike<unknown>).then === 'function') {
            (result as PromiseLike<unknown>).then(undefined, (thrown: unknown) =>
              report(thrown, value, false),
            );
          }
        } catch (thrown) {
          report(thrown, value, false);
        }
      },
      error(err: unknown) {
        if (!observer.error) return report(err, undefined, true);
        try {
          observer.error(err);
        } catch (thrown) {
          report(thrown, undefined, true);
        }
      },
      complete() {
        try {
          observer.complete?.();
        } catch (thrown) {
          report(thrown, undefined, true);
        }
      },
    });
  }
}

/**
 * The stream of {@link AtProtoEvent}s (login, logout, OAuth session created, refreshed,
 * deleted and why), mapped from the OAuth client's `onSessionUpdated` / `onSessionDeleted`
 * hooks and the module's own routes.
 *
 * @example
 * constructor(events: AtProtoEvents) {
 *   events.events$.subscribe((e) => e.type === 'login' && this.audit.log(e.did));
 * }
 * @publicApi
 */
@Injectable()
export class AtProtoEvents {
  readonly #logger = new Logger('AtProtoEvents');
  readonly #subject = new Subject<AtProtoEvent>();

  /**
   * Every event, as it happens, delivered synchronously. Subscribers are isolated: an error
   * one of them throws (in its callback, or in an operator of a stream piped from here that
   * reaches a subscriber without an error handler) is logged, never rethrown, and the other
   * subscribers still get the event. A subscriber that threw in its callback keeps getting
   * later events; one whose operator threw is ended, as RxJS ends any stream that errors.
   * Streams combined with others (`merge`, `combineLatest`) are plain RxJS again.
   */
  readonly events$: Observable<AtProtoEvent>;

  constructor() {
    const stream = new IsolatedStream<AtProtoEvent>((error, value, ended) =>
      this.#report(error, value, ended),
    );
    stream.source = this.#subject;
    this.events$ = stream;
  }

  /**
   * Sends `event` to every subscriber. An `oauth-session-deleted` message goes through
   * {@link sanitizeLogText}: it may quote an authorization server's error text.
   * @internal
   */
  emit(event: AtProtoEvent): void {
    this.#subject.next(
      (event.type === 'oauth-session-deleted' || event.type === 'bot-session-ended') &&
        event.message !== undefined
        ? { ...event, message: sanitizeLogText(event.message) }
        : event,
    );
  }

  #report(error: unknown, value: unknown, ended: boolean): void {
    const type = (value as { type?: unknown } | undefined)?.type;
    const what = typeof type === 'string' ? ` on a "${sanitizeLogText(type)}" event` : '';
    this.#logger.error(
      ended
        ? `An events$ subscription failed and has ended (give subscribe() an error handler to ` +
            `handle this yourself): ${describeError(error)}`
        : `An events$ subscriber threw${what}; the other subscribers and later events are ` +
            `still delivered. Catch errors in the subscriber: ${describeError(error)}`,
    );
  }
}
