import type { AppSessionRecord, AtProtoOAuthSessionInfo } from '../storage/store.interface.js';
import {
  type AtProtoSessionStore,
  hasSessionInfo,
  isVersionedSessionStore,
} from '../storage/store.interface.js';

/**
 * The kinds of session a {@link AtProtoSessionView} describes: the user's OAuth session
 * (`oauth`), a signed-in device's app session (`app`), a bot's app-password session (`bot`).
 * @publicApi
 */
export type AtProtoSessionKind = 'oauth' | 'app' | 'bot';

/**
 * The plain times a {@link AtProtoSessionView} is made of; any kind of session can produce
 * them.
 * @publicApi
 */
export interface AtProtoSessionTimes {
  readonly kind: AtProtoSessionKind;
  /** The DID the session belongs to. */
  readonly did: string;
  /**
   * When the access token expires, or `null`: an app session has no access token, and an
   * authorization server may not say (the OAuth client then never refreshes on its own).
   */
  readonly accessExpiresAt: Date | null;
  /**
   * When the session ends for good (nothing can renew it after that): for an app session,
   * the idle or the absolute end, whichever comes first, or its revocation; for an OAuth
   * session, the end of retention (its last write plus `oauthSessionRetention`), which a
   * refresh pushes back. `null` when unknown (a session store that keeps no end).
   */
  readonly endsAt: Date | null;
}

/**
 * One view of a session's times, the same for every kind, keeping apart the two things
 * "expired" can mean:
 * - the **access token** expired ({@link isExpired}, {@link timeUntilExpiry},
 *   {@link needsRefresh}): an OAuth or bot session is still usable, it refreshes;
 * - the **session** ended ({@link isEnded}): nothing renews it, the user logs in again.
 *
 * Every method takes the instant to judge at (epoch milliseconds or a `Date`; default now),
 * so that a caller can judge one view at one instant throughout.
 *
 * @example
 * const info = await auth.getSessionInfo(did); // no lock, no network
 * if (!info || info.isEnded()) return 'signed out';
 * if (info.needsRefresh(Date.now(), 5 * 60_000)) await auth.restore(did, true);
 * @publicApi
 */
export class AtProtoSessionView implements AtProtoSessionTimes {
  readonly kind: AtProtoSessionKind;
  readonly did: string;
  readonly accessExpiresAt: Date | null;
  readonly endsAt: Date | null;

  constructor(times: AtProtoSessionTimes) {
    this.kind = times.kind;
    this.did = times.did;
    this.accessExpiresAt = times.accessExpiresAt;
    this.endsAt = times.endsAt;
  }

  /**
   * Whether the access token has expired at `now`. An OAuth or bot session with an expired
   * access token is still usable: the next restore refreshes it. `false` when the expiry is
   * unknown, and for an app session, which has no access token (see {@link isEnded}).
   */
  isExpired(now: number | Date = Date.now()): boolean {
    const at = this.accessExpiresAt;
    return at !== null && at.getTime() <= +now;
  }

  /**
   * Milliseconds until the access token expires (0 once it has), or `undefined` when the
   * expiry is unknown or the session has no access token (an app session).
   */
  timeUntilExpiry(now: number | Date = Date.now()): number | undefined {
    const at = this.accessExpiresAt;
    return at === null ? undefined : Math.max(0, at.getTime() - +now);
  }

  /**
   * Whether the access token expires within `thresholdMs` of `now` (or has expired) while
   * the session has not ended: what a job that refreshes ahead of time asks. `false` for
   * an ended session (a refresh cannot bring it back), an unknown expiry, and an app
   * session. The OAuth client itself refreshes on use within 10 to 40 seconds of expiry.
   * @throws TypeError when `thresholdMs` is not a non-negative number
   */
  needsRefresh(now: number | Date, thresholdMs: number): boolean {
    if (!(thresholdMs >= 0) || !Number.isFinite(thresholdMs)) {
      throw new TypeError('needsRefresh: thresholdMs must be a non-negative number.');
    }
    const at = this.accessExpiresAt;
    return at !== null && !this.isEnded(now) && at.getTime() - +now <= thresholdMs;
  }

  /**
   * Whether the session has ended at `now`: an app session idle too long, past its absolute
   * lifetime or revoked; an OAuth session past its retention. `false` when the end is unknown.
   */
  isEnded(now: number | Date = Date.now()): boolean {
    const at = this.endsAt;
    return at !== null && at.getTime() <= +now;
  }
}

/**
 * The view of an OAuth session that {@link AtProtoAuthService.getSessionInfo} returns: the
 * session's times and its plain metadata, read without decrypting the tokens.
 * @publicApi
 */
export class AtProtoOAuthSessionView extends AtProtoSessionView {
  declare readonly kind: 'oauth';
  /** The authorization server (`iss`). */
  readonly issuer: string;
  /** The user's PDS (the token set's `aud`). */
  readonly pdsUrl: string;
  /** When this DID's session was first stored, if the store keeps it (Redis does not). */
  readonly createdAt: Date | undefined;
  /** The last write of the session (a login or a refresh). */
  readonly updatedAt: Date | undefined;

  /**
   * @param info what the session store read (see `AtProtoSessionInfoStore.getInfo`);
   * `expiresAt` may be `null` (unknown) for a store that keeps no end of retention.
   */
  constructor(
    info: Omit<AtProtoOAuthSessionInfo, 'expiresAt' | 'updatedAt'> & {
      readonly expiresAt: Date | null;
      readonly updatedAt?: Date;
    },
  ) {
    super({
      kind: 'oauth',
      did: info.did,
      accessExpiresAt: info.accessExpiresAt,
      endsAt: info.expiresAt,
    });
    this.issuer = info.issuer;
    this.pdsUrl = info.pdsUrl;
    this.createdAt = info.createdAt;
    this.updatedAt = info.updatedAt;
  }
}

/**
 * The view of an app session, from what `AppSessionService` returns (`AppSessionInfo`) or
 * a stored `AppSessionRecord`: its end is the idle end (`lastSeenAt` + `idleTtl`) or the
 * absolute end (`expiresAt`), whichever comes first, or its revocation. Activity recorded
 * after `lastSeenAt` was read pushes the idle end back (`lastSeenAt` is written at most
 * once a minute). An app session has no access token: `isExpired()` is `false`, use
 * `isEnded()`.
 *
 * @example
 * // options: the module's ResolvedAtProtoOptions (inject AT_PROTO_OPTIONS)
 * const view = appSessionView(await appSessions.validate(token), options.appSession);
 * @param options the app-session idle timeout, e.g. `ResolvedAtProtoOptions.appSession`
 * @publicApi
 */
export function appSessionView(
  info: Pick<AppSessionRecord, 'did' | 'expiresAt' | 'lastSeenAt'> & {
    readonly revokedAt?: Date | null;
  },
  options: { readonly idleTtlMs: number },
): AtProtoSessionView {
  if (!(options?.idleTtlMs >= 0) || !Number.isFinite(options.idleTtlMs)) {
    throw new TypeError('appSessionView: idleTtlMs must be a non-negative number.');
  }
  let end = Math.min(info.lastSeenAt.getTime() + options.idleTtlMs, info.expiresAt.getTime());
  if (info.revokedAt) end = Math.min(end, info.revokedAt.getTime());
  return new AtProtoSessionView({
    kind: 'app',
    did: info.did,
    accessExpiresAt: null,
    endsAt: new Date(end),
  });
}

/**
 * The view of the OAuth session of `did` from `store`: its `getInfo` when it
 * has one (the built-in stores: no decryption on TypeORM and memory), else a full read of
 * the session (with its decryption, on a store of your own), the end of retention then
 * being the last write plus `retentionMs`, or unknown without `getVersioned`.
 * @internal
 */
export async function readOAuthSessionView(
  store: AtProtoSessionStore,
  did: string,
  retentionMs: number,
): Promise<AtProtoOAuthSessionView | undefined> {
  if (hasSessionInfo(store)) {
    const info = await store.getInfo(did);
    return info && new AtProtoOAuthSessionView(info);
  }
  const read = isVersionedSessionStore(store)
    ? await store.getVersioned(did)
    : await store.get(did).then((value) => value && { value, updatedAt: undefined });
  if (!read) return undefined;
  const { tokenSet } = read.value;
  return new AtProtoOAuthSessionView({
    did,
    issuer: tokenSet.iss,
    pdsUrl: tokenSet.aud,
    accessExpiresAt: tokenSet.expires_at ? new Date(tokenSet.expires_at) : null,
    expiresAt: read.updatedAt ? new Date(read.updatedAt.getTime() + retentionMs) : null,
    ...(read.updatedAt ? { updatedAt: read.updatedAt } : {}),
  });
}
