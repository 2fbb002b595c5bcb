import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { Inject, Injectable, Logger, type OnModuleDestroy } from '@nestjs/common';
import {
  isExpectedSessionError,
  NodeOAuthClient,
  OAuthCallbackError,
  OAuthResolverError,
  OAuthResponseError,
  type NodeSavedSession,
  type OAuthSession,
} from '@atproto/oauth-client-node';
import {
  AT_PROTO_OAUTH_CLIENT,
  AT_PROTO_OPTIONS,
  AT_PROTO_SESSION_STORE,
  AT_PROTO_STATE_STORE,
} from '../at-proto.constants.js';
import { AtProtoError } from '../errors/at-proto.error.js';
import {
  AtProtoBadRequestError,
  AtProtoSessionUnavailableError,
  AtProtoUnavailableError,
  AtProtoUpstreamError,
} from '../errors/at-proto-http.errors.js';
import { AtProtoStoreError } from '../errors/at-proto-store.error.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { noRefreshScope, sessionLockName } from '../lock/lock-scope.js';
import { AtProtoLockError } from '../errors/at-proto-lock.error.js';
import {
  type AtProtoSessionStore,
  type AtProtoStateStore,
  isVersionedSessionStore,
} from '../storage/store.interface.js';
import { describeError } from '../errors/describe-error.js';
import { type AtProtoOAuthSessionView, readOAuthSessionView } from '../session/session-view.js';
import { AT_PROTO_MESSAGES, causeChain, findMappedError } from '../errors/to-http-exception.js';
import { normalizeLoginInput, normalizeReturnTo } from './login-input.js';
import { expectingAccount, LoginAccountMismatch } from './login-expectation.js';
import { oauthPhase } from './oauth-phase.js';
import { type RequestOutcome, requestOutcome } from './request-outcome.js';
import { heldLock, SessionLocks } from './session-locks.js';

/** What the module keeps in the OAuth client's `appState` for a browser login. */
interface LoginAppState {
  /** SHA-256 (base64url) of the nonce held in the login cookie of the browser that started. */
  b: string;
  /** Where to send the browser after the callback. */
  r: string;
  /** A native or CLI app's login: what it asked for, handed back at the callback. */
  n?: unknown;
  /** A step-up login: the DID that must sign in (the app session's that asked). */
  d?: string;
}

const STATE_PARAM = /^[\x21-\x7e]{1,255}$/;
/** A restore skips refreshing only when the access token has at least this long left. */
const FRESH_MARGIN_MS = 60_000;

/**
 * The OAuth operations behind the module's routes, for apps that want their own routes:
 * start a login bound to the browser, complete it, restore a user's OAuth session, revoke it.
 * @publicApi
 */
@Injectable()
export class AtProtoAuthService implements OnModuleDestroy {
  readonly #logger = new Logger('AtProtoAuth');
  /**
   * Sessions restored from a fresh stored session, by DID, reused by the next restores of
   * the same DID while the stored session has the same issuer, auth method and DPoP key
   * (`binding`) and for at most {@link RESTORED_REUSE_MS}: the OAuth client's `restore()`
   * builds a server agent and a session object each time (about as much work as the store
   * read itself, see docs/benchmarks.md), although nothing they hold changes until the user
   * logs in again. The store is still read on every restore, so a logout, a revocation or a
   * new login anywhere is seen at once: a session object reads its tokens from the store
   * per call, refuses to act once the stored session has another DPoP key, and a new login
   * changes the binding. Bounded, least recently used out; expired objects (they hold their
   * session's DPoP private key) are swept at least once per window, and dropped when a
   * restore finds their session gone or the session is revoked or signed out here.
   */
  readonly #restored = new Map<string, { session: OAuthSession; binding: string; until: number }>();
  /**
   * How long a restored session object is reused; `0` never (every restore runs the OAuth
   * client's: the benchmark's baseline).
   * @internal
   */
  restoredReuseMs = RESTORED_REUSE_MS;
  /** Restored session objects kept at most. @internal */
  restoredMaxEntries = RESTORED_MAX_ENTRIES;
  /** When the kept objects were last swept of expired ones (`performance.now()`). */
  #sweptAt = 0;
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** How many restored session objects are kept (tests). @internal */
  get restoredCount(): number {
    return this.#restored.size;
  }

  /**
   * Drops the least recently used objects beyond the bound, and, at most once per reuse
   * window, every expired one: an object holds its session's DPoP private key, which must
   * not stay in memory long after the window, whether or not its DID is restored again.
   */
  #sweepRestored(now: number, force = false): void {
    while (this.#restored.size > this.restoredMaxEntries) {
      this.#restored.delete(this.#restored.keys().next().value!);
    }
    // An idle instance sweeps too (unref'd: it keeps no process alive).
    this.#sweeper ??= setInterval(
      () => this.#sweepRestored(performance.now(), true),
      RESTORED_REUSE_MS,
    ).unref();
    if (!force && now - this.#sweptAt < this.restoredReuseMs) return;
    this.#sweptAt = now;
    for (const [did, kept] of this.#restored) if (kept.until <= now) this.#restored.delete(did);
  }

  /** @internal */
  onModuleDestroy(): void {
    clearInterval(this.#sweeper);
    this.#restored.clear();
  }

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    @Inject(AT_PROTO_OAUTH_CLIENT) private readonly client: NodeOAuthClient,
    @Inject(AT_PROTO_STATE_STORE) private readonly stateStore: AtProtoStateStore,
    @Inject(AT_PROTO_SESSION_STORE) private readonly sessionStore: AtProtoSessionStore,
    private readonly locks: SessionLocks,
  ) {}

  /** The underlying `NodeOAuthClient`, for what this service does not cover. */
  get oauthClient(): NodeOAuthClient {
    return this.client;
  }

  /**
   * The OAuth client's `authorize()`: the authorization URL for `input` (a handle, DID or
   * PDS URL, checked first), asking for `options.scope` (default: the module's `scope`
   * option, without the `optionalScopes`). No browser binding: prefer {@link beginLogin}
   * for browsers.
   * @throws AtProtoBadRequestError for bad input or an unresolvable identity
   */
  async authorize(input: unknown, options: { state?: string; scope?: string } = {}): Promise<URL> {
    const identity = normalizeLoginInput(input, this.options.allowHttpServers);
    try {
      return await this.client.authorize(identity, { scope: this.options.scope, ...options });
    } catch (error) {
      throw this.authorizeError(identity, error);
    }
  }

  /**
   * The OAuth client's `callback()`: consumes the state, exchanges the code and stores the
   * session (replacing the user's previous one). No browser binding check: prefer
   * {@link completeLogin} for browsers.
   */
  async callback(
    params: URLSearchParams,
  ): Promise<{ session: OAuthSession; state: string | null }> {
    try {
      return await oauthPhase.run('login', () => this.client.callback(params));
    } catch (error) {
      if (error instanceof OAuthCallbackError) {
        throw new AtProtoBadRequestError(
          `The login response was refused: ${callbackReason(error)}.`,
          { cause: error },
        );
      }
      throw new AtProtoUpstreamError('The login could not be completed. Try again.', {
        cause: error,
      });
    }
  }

  /**
   * Starts a login for what the user typed (handle, DID or PDS URL). Returns the URL to
   * redirect the browser to and a `bindingNonce` that must come back with the callback
   * (the module keeps it in a short-lived HttpOnly cookie) so that a callback opened in
   * another browser is refused. `native` (JSON-serialisable) is kept in the login's state and
   * handed back to `completeLogin`'s `whileLocked`.
   *
   * `scope` asks for declared scopes (the module's `scope` and `optionalScopes`, space-separated)
   * on top of the `scope` option; `expectedDid` makes it a step-up login of that account:
   * the callback then refuses another account (400) and changes nothing, neither this
   * account's session nor the other's.
   * @throws AtProtoBadRequestError for bad input, a scope the app does not declare, or an
   * unresolvable identity
   * @throws AtProtoUpstreamError when the user's servers cannot be reached
   */
  async beginLogin(
    input: unknown,
    options: { returnTo?: unknown; native?: unknown; scope?: unknown; expectedDid?: string } = {},
  ): Promise<{ url: URL; bindingNonce: string; returnTo: string }> {
    const identity = normalizeLoginInput(input, this.options.allowHttpServers);
    const scope = this.loginScope(options.scope);
    const returnTo = normalizeReturnTo(
      options.returnTo,
      this.options.publicUrl,
      this.options.afterLoginPath,
      this.options.trustedOrigins,
    );
    const bindingNonce = randomBytes(32).toString('base64url');
    const appState: LoginAppState = {
      b: sha256(bindingNonce),
      r: returnTo,
      ...(options.native !== undefined ? { n: options.native } : {}),
      ...(options.expectedDid !== undefined ? { d: options.expectedDid } : {}),
    };
    try {
      const url = await this.client.authorize(identity, { state: JSON.stringify(appState), scope });
      return { url, bindingNonce, returnTo };
    } catch (error) {
      throw this.authorizeError(identity, error);
    }
  }

  /** The scope a login asks for: the `scope` option, plus the declared scopes requested. */
  private loginScope(requested: unknown): string {
    // Always sent: without it the OAuth client asks for the metadata's scope, which declares
    // the optional scopes too.
    if (requested === undefined || requested === null || requested === '') {
      return this.options.scope;
    }
    if (typeof requested !== 'string' || requested.length > 4096) {
      throw new AtProtoBadRequestError('scope must be scopes separated by spaces.');
    }
    try {
      return this.options.declaredScopes.loginScope(requested);
    } catch (error) {
      const token = error instanceof TypeError ? error.message : '';
      // Echoed only when it looks like a scope (no markup, bounded).
      const shown = /^[\x21-\x7e]{1,200}$/.test(token) ? ` "${token}"` : '';
      throw new AtProtoBadRequestError(
        `The scope${shown} is not one this app asks for: only the scopes its client metadata declares (the module's scope and optionalScopes) can be requested.`,
      );
    }
  }

  private authorizeError(identity: string, error: unknown): Error {
    if (isInfrastructureError(error)) {
      this.#logger.warn(`Starting a login failed: ${describeError(error)}`);
      return new AtProtoUnavailableError(
        'The login could not be started: sessions cannot be stored right now. Try again in a moment.',
        { cause: error },
      );
    }
    if (error instanceof OAuthResolverError || isResolutionFailure(error)) {
      return new AtProtoBadRequestError(
        `Could not find an AT Protocol account or server for "${identity}". Check the spelling.`,
        { cause: error },
      );
    }
    this.#logger.warn(`Starting a login failed: ${describeError(error)}`);
    return new AtProtoUpstreamError(
      'The authorization server could not be reached. Try again in a moment.',
      { cause: error },
    );
  }

  /**
   * Completes a login from the callback's query parameters. Checks, before the OAuth
   * client consumes the state and exchanges the code, that the state is known and that
   * `bindingNonce` is the one the login started with (or, as a function, the nonce whose
   * SHA-256 (base64url) it is given, if this browser holds it); a mismatch changes nothing.
   *
   * The user's OAuth session lock is held from the moment the DID is known (right after the
   * code exchange) until the new session is stored and `whileLocked` has run, so that the
   * replacement of the user's previous session is one step for every other device and
   * instance, and so that cleanup or a logout elsewhere cannot revoke the new session before
   * its first app session exists (the module's callback route creates it in `whileLocked`,
   * or, for a native app's login, the one-time code the app exchanges for its session;
   * `whileLocked` gets what `beginLogin` was given as `native`, and its `expectedDid`).
   * @returns the DID, the OAuth session, where to send the browser, and what `whileLocked` returned
   * @throws AtProtoBadRequestError for a forged, expired, replayed or foreign callback, a
   * mismatching issuer, an error answer from the authorization server, or a step-up login
   * (`expectedDid`) signed in with another account (nothing is stored or replaced; the
   * tokens obtained are revoked)
   * @throws AtProtoUpstreamError when the authorization server cannot be reached
   * @throws AtProtoUnavailableError / AtProtoLockError / AtProtoStoreError when the module's
   * storage or lock cannot be used right now (nothing was changed)
   */
  async completeLogin<T = undefined>(
    params: URLSearchParams,
    bindingNonce: string | undefined | ((nonceHash: string) => string | undefined),
    whileLocked?: (
      did: string,
      native: unknown,
      login: { expectedDid: string | undefined },
    ) => Promise<T>,
  ): Promise<{ did: string; session: OAuthSession; returnTo: string; result: T | undefined }> {
    const state = params.get('state');
    if (!state || !STATE_PARAM.test(state)) {
      throw new AtProtoBadRequestError(
        'The login response has no valid state. Start the login again.',
      );
    }
    // One callback per state at a time, across instances: a reloaded callback page must not
    // exchange the same code twice (a code replay can make the server revoke the grant).
    // The second one waits, then finds the state consumed.
    return this.locks.run(`atproto-login-state-${state}`, () =>
      this.completeLoginLocked(state, params, bindingNonce, whileLocked),
    );
  }

  private async completeLoginLocked<T>(
    state: string,
    params: URLSearchParams,
    bindingNonce: string | undefined | ((nonceHash: string) => string | undefined),
    whileLocked:
      | ((did: string, native: unknown, login: { expectedDid: string | undefined }) => Promise<T>)
      | undefined,
  ): Promise<{ did: string; session: OAuthSession; returnTo: string; result: T | undefined }> {
    const saved = await this.stateStore.get(state);
    const appState = saved ? parseAppState(saved.appState) : undefined;
    if (!saved || !appState) {
      throw new AtProtoBadRequestError(
        'This login response is unknown, expired or already used. Start the login again.',
      );
    }
    // A function finds the nonce by its hash (the module keeps one cookie per login under
    // way, named after it); a string is the nonce itself.
    const nonce = typeof bindingNonce === 'function' ? bindingNonce(appState.b) : bindingNonce;
    if (!nonce || !safeEqual(sha256(nonce), appState.b)) {
      throw new AtProtoBadRequestError(
        'This login was started in another browser (or its cookie is missing). Start the login again here.',
      );
    }
    // Checked here, before the client consumes the state, so that a bad answer changes
    // nothing: the state stays until it expires, and no code is exchanged.
    const serverError = params.get('error');
    if (serverError) {
      throw new AtProtoBadRequestError(
        `The authorization server did not grant access (${safeCode(serverError)}).`,
      );
    }
    const iss = params.get('iss');
    if (iss !== null && iss !== saved.iss) {
      throw new AtProtoBadRequestError(
        'The login response comes from another issuer than the one the login started with.',
      );
    }
    return this.locks.holdUntilDone(async () => {
      let session: OAuthSession;
      const expectedDid = appState.d;
      const callback = () => oauthPhase.run('login', () => this.client.callback(params));
      try {
        ({ session } = await (expectedDid === undefined
          ? callback()
          : expectingAccount(expectedDid, callback)));
      } catch (error) {
        if (findInCauses(error, LoginAccountMismatch)) {
          throw new AtProtoBadRequestError(
            'You signed in with another account than the one that asked for more permissions. Nothing was changed: sign in again with the same account to grant them.',
            { cause: error },
          );
        }
        throw this.callbackError(error);
      }
      if (expectedDid !== undefined && session.did !== expectedDid) {
        // Unreachable while the store and the lock refuse the other account (see above).
        throw new AtProtoBadRequestError(
          'You signed in with another account than the one that asked for more permissions. Sign in again with the same account to grant them.',
        );
      }
      const result = whileLocked
        ? await whileLocked(session.did, appState.n, { expectedDid })
        : undefined;
      return { did: session.did, session, returnTo: appState.r, result };
    });
  }

  private callbackError(error: unknown): Error {
    // The client wraps every failure in OAuthCallbackError: only a refusal by the server
    // (an OAuth error answer) or a failed check is the response's fault; an unreachable
    // server is the server's, and a failed write or lock is ours. Both are logged.
    const cause = error instanceof OAuthCallbackError ? error.cause : error;
    if (
      error instanceof OAuthCallbackError &&
      (cause === undefined || (cause instanceof OAuthResponseError && cause.status < 500))
    ) {
      return new AtProtoBadRequestError(
        `The login response was refused: ${callbackReason(error)}. Start the login again.`,
        { cause: error },
      );
    }
    this.#logger.warn(`Completing a login failed: ${describeError(cause)}`);
    if (isInfrastructureError(cause)) {
      return new AtProtoUnavailableError(
        'The login could not be completed: sessions cannot be stored right now. Start the login again in a moment.',
        { cause: error },
      );
    }
    return new AtProtoUpstreamError('The login could not be completed. Try again.', {
      cause: error,
    });
  }

  /**
   * The user's live OAuth session, refreshed first if its access token is (about to be)
   * expired. Takes the session lock, so call it only when you need to act as the user.
   * @param refresh `true` forces a refresh.
   * @throws AtProtoSessionUnavailableError when the session is gone (log in again)
   * @throws AtProtoUpstreamError when a needed refresh could not reach the server
   */
  async restore(did: string, refresh: boolean | 'auto' = 'auto'): Promise<OAuthSession> {
    try {
      const fresh = refresh === 'auto' ? await this.freshStoredSession(did) : undefined;
      if (!fresh) {
        // Gone, stale or a forced refresh: what was kept is not handed out again.
        this.#restored.delete(did);
        return this.withoutNeedlessLocks(await this.client.restore(did, refresh));
      }
      const binding = sessionBinding(fresh);
      const kept = this.#restored.get(did);
      // A monotonic clock: a wall clock stepped back would stretch the reuse window.
      const now = performance.now();
      if (kept && kept.binding === binding && kept.until > now && this.restoredReuseMs > 0) {
        // Least recently used last: the first entry is the one to evict.
        this.#restored.delete(did);
        this.#restored.set(did, kept);
        return kept.session;
      }
      // Cannot refresh (refresh = false), so the lock may skip Redis and the client reuses
      // the session just read: see lock/lock-scope.ts.
      const session = this.withoutNeedlessLocks(
        await noRefreshScope.run(scope(did, fresh), () => this.client.restore(did, false)),
      );
      this.#restored.delete(did);
      if (this.restoredReuseMs > 0) {
        this.#restored.set(did, { session, binding, until: now + this.restoredReuseMs });
        this.#sweepRestored(now);
      }
      return session;
    } catch (error) {
      // The lock's own error, or one the fetch layer wrapped (a refresh refused because the
      // lock could expire before it completes): its message is meant for users.
      const lockError = findInCauses(error, AtProtoLockError);
      if (lockError) {
        if (lockError !== error)
          this.#logger.warn(`Restoring an OAuth session failed: ${describeError(lockError)}`);
        throw new AtProtoUpstreamError(lockError.message, { cause: error });
      }
      if (isSessionGone(error)) {
        throw new AtProtoSessionUnavailableError(
          'The AT Protocol session has ended. Log in again.',
          { cause: error, did },
        );
      }
      this.#logger.warn(`Restoring an OAuth session failed: ${describeError(error)}`);
      throw new AtProtoUpstreamError(
        'The AT Protocol session could not be restored right now. Try again.',
        { cause: error },
      );
    }
  }

  /**
   * The user's OAuth session as stored, without restoring it: no session lock, no call to
   * the OAuth client or the network. Reads the plain columns (issuer, PDS, access-token
   * expiry, end of retention, write times) in one statement on the primary, without
   * decrypting the tokens (TypeORM; Redis reads and decrypts the value, one `GET`). Use it
   * to show or schedule, not to decide that the user may act: only {@link restore} knows
   * whether the authorization server still honours the session.
   * @returns the view, or `undefined` when no session is stored (or it is past retention)
   * @throws AtProtoStoreError for a malformed DID, or when the store cannot be read
   * @example
   * const info = await auth.getSessionInfo(did);
   * if (info?.needsRefresh(Date.now(), 5 * 60_000)) await auth.restore(did, true);
   */
  async getSessionInfo(did: string): Promise<AtProtoOAuthSessionView | undefined> {
    return readOAuthSessionView(this.sessionStore, did, this.options.oauthSessionRetentionMs);
  }

  /**
   * The scope the user's OAuth session was granted (space-separated), as stored: one read of
   * the session, no network, the session lock only when no session is found (a login may be
   * replacing it). What `@AtProtoScope()` routes are checked against.
   * @returns the scope, or `undefined` when no session is stored
   * @throws AtProtoStoreError / AtProtoDecryptionError when the store cannot be read
   */
  async grantedScope(did: string): Promise<string | undefined> {
    // Not found: read again under the session lock, which a login replacing the session
    // holds from its code exchange until the new session is stored (the OAuth client deletes
    // the previous one first). The user's other devices then wait for the new session
    // instead of being told theirs has ended.
    const stored =
      (await this.sessionStore.get(did)) ??
      (await this.locks.run(sessionLockName(did), () => this.sessionStore.get(did)));
    return stored === undefined ? undefined : (stored.tokenSet.scope ?? '');
  }

  /**
   * Every XRPC call through an `OAuthSession` reads its token set with `refresh = 'auto'`,
   * which takes the session lock (a Redis round trip with `redis`, and a failure while Redis
   * is down) even when the token is fresh. The same no-refresh scope as `restore` applies:
   * a fresh stored token is read with `refresh = false`, which cannot refresh; anything else
   * (stale token, forced refresh after a 401, `signOut()`'s read before it deletes) goes
   * through the lock unchanged.
   */
  private withoutNeedlessLocks(session: OAuthSession): OAuthSession {
    const did = session.did;
    // getTokenSet is protected in the typings; it is the one method fetchHandler(),
    // getTokenInfo() and signOut() read tokens through (@atproto/oauth-client 0.8).
    const tokens = session as unknown as {
      getTokenSet: (refresh: boolean | 'auto') => Promise<unknown>;
    };
    const original = tokens.getTokenSet.bind(session);
    // The object signs its requests with the DPoP key it was built with, and reads the
    // tokens from the store on every call: once the user has signed in again (a new session,
    // a new DPoP key), it would send the new token with the old key, the PDS would refuse it,
    // and the OAuth client would then delete the new session as invalid. Such an object
    // refuses to act instead, before anything is sent; a new restore gets the new session.
    const boundKey = dpopKeyId(
      (session as unknown as { server: { dpopKey: { bareJwk?: object } } }).server.dpopKey.bareJwk,
    );
    const sameLogin = (stored: NodeSavedSession | undefined) => {
      if (stored && dpopKeyId(stored.dpopJwk) !== boundKey) {
        throw new AtProtoUpstreamError(
          'The user signed in again since this AT Protocol session was restored: restore it again.',
        );
      }
    };
    tokens.getTokenSet = async (refresh: boolean | 'auto') => {
      if (refresh === 'auto') {
        const fresh = await this.freshStoredSession(did);
        if (fresh) {
          sameLogin(fresh);
          return noRefreshScope.run(scope(did, fresh), () => original(false));
        }
      }
      // A refresh (due, or forced after a 401): rare, so one more read is affordable.
      sameLogin(await this.sessionStore.get(did).catch(() => undefined));
      return original(refresh).catch((error: unknown) => {
        // The session's own retry after a PDS 401 swallows this error and returns the 401:
        // recorded, so that the request can be answered for what happened (see
        // request-outcome.ts).
        requestOutcome.getStore()?.refreshFailures.set(did, error);
        throw error;
      });
    };
    // A PDS call that got a 401 the session's own retry could not cure: the OAuth client
    // returns that 401 (an Agent turns it into a plain XRPCError) and hides why. What the
    // call's refresh did is recorded in a scope of the call's own (request-outcome.ts). If
    // the refresh failed, the call throws instead: the client's own error when the module
    // maps it (a refused refresh is its TokenRefreshError: the session has ended, 401; the
    // lock's or storage's errors: 503), else AtProtoUpstreamError (the authorization server
    // did not answer in time: 503), so that the exception filter answers for what happened
    // and code written against the client recognizes it. Any other 401 is returned as is.
    const fetchHandler = session.fetchHandler.bind(session);
    session.fetchHandler = async (pathname, init) => {
      const outcome: RequestOutcome = { deleted: new Set(), refreshFailures: new Map() };
      const response = await requestOutcome.run(outcome, () => fetchHandler(pathname, init));
      if (response.status !== 401) return response;
      const failure = outcome.refreshFailures.get(did);
      const deleted = outcome.deleted.has(did);
      if (failure === undefined && !deleted) return response;
      await response.body?.cancel().catch(() => undefined);
      if (failure !== undefined && findMappedError(failure, 'session')) throw failure;
      if (deleted) {
        throw new AtProtoSessionUnavailableError(AT_PROTO_MESSAGES.sessionEnded, {
          cause: failure,
          did,
        });
      }
      throw new AtProtoUpstreamError(AT_PROTO_MESSAGES.sessionUnusable, { cause: failure });
    };
    // signOut() reads the tokens, revokes them at the server and deletes the session: one
    // step under the session lock, like revoke(), so that no refresh interleaves with it.
    const signOut = session.signOut.bind(session);
    session.signOut = () => {
      this.#restored.delete(did);
      return this.locks.run(sessionLockName(did), () => oauthPhase.run('logout', signOut));
    };
    return session;
  }

  /**
   * The stored session if its access token stays valid for at least another minute: then
   * no refresh is due (the client refreshes within 40 s of expiry) and a restore can skip it.
   */
  private async freshStoredSession(did: string): Promise<NodeSavedSession | undefined> {
    const stored = await this.sessionStore.get(did).catch(() => undefined);
    const expiresAt = stored?.tokenSet.expires_at;
    return expiresAt !== undefined && new Date(expiresAt).getTime() > Date.now() + FRESH_MARGIN_MS
      ? stored
      : undefined;
  }

  /**
   * Revokes the user's OAuth session at the authorization server and deletes it, as one
   * step under the user's session lock: a refresh on another instance cannot interleave and
   * store rotated tokens again after the delete. App sessions are not touched; see
   * `AppSessionService`.
   *
   * With `ifUnused`, the decision to revoke is taken again under the lock, right before
   * revoking: nothing is revoked when `ifUnused.inUse()` says the session is in use again (an
   * app session was created meanwhile), or when the session was written (a new login) after
   * `ifUnused.since`. Logout of a last device and cleanup use this, so that a user who just
   * signed in again is never signed out by a decision taken before.
   *
   * If the call to the authorization server fails once the session is deleted here, the
   * failure is logged and the revocation counts as done (the tokens are gone from storage).
   * @returns whether a session was revoked and deleted (`false`: none was stored, or it was
   * in use again)
   * @throws AtProtoUpstreamError when nothing could be deleted (the session lock, the storage
   * or the authorization server's metadata unavailable): the session is kept, try again
   */
  async revoke(
    did: string,
    ifUnused?: { since: Date; inUse: () => Promise<boolean> },
  ): Promise<boolean> {
    const name = sessionLockName(did);
    this.#restored.delete(did);
    try {
      return await this.locks.run(name, async () => {
        // Again under the lock: a restore that was under way may have kept it meanwhile.
        this.#restored.delete(did);
        if (ifUnused && (await this.#inUseSince(did, ifUnused))) return false;
        try {
          await oauthPhase.run('logout', () => this.client.revoke(did));
        } catch (error) {
          // client.revoke() deletes the stored session in a finally block, after the call
          // to the authorization server: a failure after the delete only concerns the server.
          if (!heldLock(name)?.deleted.has(did)) throw error;
          this.#logger.warn(
            `Revoking an OAuth session at the authorization server failed (deleted here): ${describeError(error)}`,
          );
        }
        return heldLock(name)?.deleted.has(did) ?? false;
      });
    } catch (error) {
      this.#logger.warn(`Revoking an OAuth session failed (kept): ${describeError(error)}`);
      throw new AtProtoUpstreamError(
        'The OAuth session could not be revoked right now; it is kept. Try again.',
        { cause: error },
      );
    }
  }

  async #inUseSince(
    did: string,
    ifUnused: { since: Date; inUse: () => Promise<boolean> },
  ): Promise<boolean> {
    if (await ifUnused.inUse()) return true;
    if (!isVersionedSessionStore(this.sessionStore)) return false;
    const stored = await this.sessionStore.getVersioned(did);
    return stored !== undefined && stored.updatedAt.getTime() > ifUnused.since.getTime();
  }
}

/** How long a restored session object is reused (the metadata it holds may be this old). */
const RESTORED_REUSE_MS = 60_000;
/** Restored session objects kept at most (one per DID). */
const RESTORED_MAX_ENTRIES = 10_000;

/** A DPoP key's public part, to tell two keys apart. */
function dpopKeyId(jwk: object | undefined): string {
  const { kty, crv, x, y } = (jwk ?? {}) as Record<string, unknown>;
  return JSON.stringify([kty, crv, x, y]);
}

/**
 * What a restored session object is built from, apart from the tokens it reads per call:
 * the issuer (its server agent), the client auth method (the signing key) and the DPoP key.
 * Hashed, so the map holds no second copy of the key.
 */
function sessionBinding(session: NodeSavedSession): string {
  return createHash('sha256')
    .update(
      JSON.stringify([session.tokenSet.iss, session.authMethod ?? null, session.dpopJwk]),
      'utf8',
    )
    .digest('base64url');
}

function scope(did: string, session: NodeSavedSession) {
  return { lockName: sessionLockName(did), did, session };
}

function sha256(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('base64url');
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function parseAppState(raw: string | undefined): LoginAppState | undefined {
  if (!raw) return undefined;
  try {
    const value = JSON.parse(raw) as Partial<LoginAppState>;
    return typeof value.b === 'string' && typeof value.r === 'string'
      ? {
          b: value.b,
          r: value.r,
          ...(value.n !== undefined ? { n: value.n } : {}),
          ...(typeof value.d === 'string' ? { d: value.d } : {}),
        }
      : undefined;
  } catch {
    return undefined;
  }
}

/** An OAuth error code as sent by the server, reduced to its safe characters. */
function safeCode(code: string): string {
  return code.replace(/[^a-z_]/gi, '').slice(0, 64) || 'error';
}

function callbackReason(error: OAuthCallbackError): string {
  const message = error.message ?? '';
  if (/issuer/i.test(message)) return 'the issuer does not match';
  if (/code/i.test(message)) return 'the authorization code is missing or invalid';
  return 'it could not be verified';
}

function isResolutionFailure(error: unknown): boolean {
  const name = (error as { name?: unknown })?.name;
  return (
    typeof name === 'string' &&
    /HandleResolverError|DidError|InvalidDidError|OAuthResolverError/.test(name)
  );
}

/** The first error of class `type` in the cause chain of `error`. */
function findInCauses<E extends Error>(
  error: unknown,
  type: abstract new (...args: never[]) => E,
): E | undefined {
  for (const e of causeChain(error)) if (e instanceof type) return e;
  return undefined;
}

/** The module's own storage or lock failed (anywhere in the cause chain). */
function isInfrastructureError(error: unknown): boolean {
  for (const e of causeChain(error)) {
    if (
      e instanceof AtProtoError &&
      (e.code === 'ERR_AT_PROTO_STORE' ||
        e.code === 'ERR_AT_PROTO_LOCK' ||
        e.code === 'ERR_AT_PROTO_DECRYPT' ||
        e.code === 'ERR_AT_PROTO_KEY_RING_UNAVAILABLE')
    ) {
      return true;
    }
  }
  return false;
}

function isSessionGone(error: unknown): boolean {
  if (error instanceof AtProtoStoreError) return false;
  return (
    isExpectedSessionError(error) ||
    (error instanceof Error && /session was deleted/i.test(error.message))
  );
}
