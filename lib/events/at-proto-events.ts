import { Injectable } from '@nestjs/common';
import { Observable, Subject } from 'rxjs';

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
 * Events the module emits. Subscribe with `AtProtoEvents.events$`.
 * @publicApi
 */
export type AtProtoEvent =
  | { type: 'login'; did: string; appSessionId: string }
  | { type: 'logout'; did: string; appSessionId: string; everywhere: boolean }
  | { type: 'oauth-session-created'; did: string }
  | { type: 'oauth-session-refreshed'; did: string }
  | {
      type: 'oauth-session-deleted';
      did: string;
      reason: AtProtoSessionDeletedReason;
      /** A short description of the cause, without secrets. */
      message?: string;
    };

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
  readonly #subject = new Subject<AtProtoEvent>();

  /**
   * Every event, as it happens, delivered synchronously. Catch errors inside your
   * subscriber: RxJS reports an error thrown by a subscriber as an unhandled error.
   */
  readonly events$: Observable<AtProtoEvent> = this.#subject.asObservable();

  /** @internal */
  emit(event: AtProtoEvent): void {
    this.#subject.next(event);
  }
}
