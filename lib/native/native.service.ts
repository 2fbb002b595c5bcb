import { createHash, hash, randomBytes } from 'node:crypto';
import { Inject, Injectable, Logger, Optional } from '@nestjs/common';
import { AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { AtProtoBadRequestError } from '../errors/at-proto-http.errors.js';
import { describeError } from '../errors/describe-error.js';
import { AtProtoEvents } from '../events/at-proto-events.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { AppSessionService } from '../session/app-session.service.js';
import type { NativeLoginRequest } from './native-login-request.js';
import { matchRedirectUri, type ResolvedNativeOptions } from './native-options.js';
import type { NativeRefreshFamilyRecord, NativeTokenStore } from './native-store.interface.js';
import { AtProtoTokenError } from './native-token.error.js';
import { JWT_SHAPE, MAX_TOKEN_LENGTH, NativeTokens } from './native-tokens.js';
import { AT_PROTO_NATIVE_STORE } from './native.constants.js';

/** How long a one-time code can be exchanged. @internal */
export const NATIVE_CODE_TTL_MS = 60_000;
/**
 * How long after a rotation the previous refresh token still gets the same successor, as
 * long as that successor is unused (RFC 9700 §4.14.2): a device whose refresh answer was
 * lost can retry without being signed out.
 * @internal
 */
export const REFRESH_GRACE_MS = 30_000;
/**
 * Most verified access tokens kept in the in-process cache; the oldest entries go first.
 * 10,000 entries of a few hundred bytes each: a few MB at most.
 * @internal
 */
export const ACCESS_TOKEN_CACHE_MAX_ENTRIES = 10_000;

/** 32 random bytes in base64url: the one-time code (256 bits). */
const CODE_SYNTAX = /^[A-Za-z0-9_-]{43}$/;
/** RFC 7636 §4.1: 43 to 128 unreserved characters. */
const VERIFIER_SYNTAX = /^[A-Za-z0-9._~-]{43,128}$/;

/**
 * What `POST <prefix>/token` answers (RFC 6749 §5.1), with the DID that signed in.
 * @publicApi
 */
export interface NativeTokenResponse {
  /** A JWT (`typ: at+jwt`) to send as `Authorization: Bearer <access_token>`. */
  access_token: string;
  /** A JWT (`typ: refresh+jwt`) for `grant_type=refresh_token`; rotated on every use. */
  refresh_token: string;
  token_type: 'Bearer';
  /** Seconds until the access token expires. */
  expires_in: number;
  /** The DID that signed in. */
  did: string;
}

/**
 * A verified access token: who it acts for, its app session (which the guard still checks
 * on every request, so that a revocation applies at once), and its expiry.
 * @publicApi
 */
export interface NativeAccessTokenInfo {
  did: string;
  appSessionId: string;
  expiresAt: Date;
}

/**
 * Native and CLI apps' token pairs: the one-time code a native login ends with, the token
 * endpoint (code exchange and refresh rotation with reuse detection), revocation, and the
 * verification of bearer access tokens. Each native sign-in is one app session (a device in
 * `AppSessionService.list`); revoking it ends its refresh tokens, and the guard refuses its
 * access tokens. Usable when the `native` option is set (see {@link enabled}).
 * @publicApi
 */
@Injectable()
export class AtProtoNativeService {
  readonly #logger = new Logger('AtProtoNative');
  readonly #native: ResolvedNativeOptions | undefined;
  readonly #tokens: NativeTokens | undefined;
  // Why a cache: verifying an HS256 JWT with jose costs 10-13 µs, more than the guard's
  // whole budget on a cached cookie request. A verified token stays valid until its `exp`
  // (nothing else about it can change: revocation is the app session's, which the guard
  // checks on every request), so it is kept until then, keyed by the SHA-256 of the token
  // string (the token itself is not kept). FIFO rather than LRU: a hit then only reads the
  // map, and entries live at most one access-token lifetime, so the oldest entry is also
  // the one closest to expiry. Only tokens that verified are cached: garbage cannot fill it.
  readonly #verified = new Map<string, { did: string; appSessionId: string; expiresAt: number }>();

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    private readonly appSessions: AppSessionService,
    @Inject(AT_PROTO_NATIVE_STORE) private readonly store: NativeTokenStore,
    @Optional() private readonly events?: AtProtoEvents,
  ) {
    this.#native = options.native;
    this.#tokens = options.native ? new NativeTokens(options.native, options.publicUrl) : undefined;
  }

  /** Whether native apps are enabled (the `native` option is set). */
  get enabled(): boolean {
    return this.#native !== undefined;
  }

  /**
   * Ends a native login for `did`: stores a one-time code (256 random bits; only its SHA-256
   * is kept) bound to the request's PKCE challenge, redirect URI and the DID, valid
   * {@link NATIVE_CODE_TTL_MS} and usable once, and returns where to send the browser:
   * `redirect_uri?code=…&state=…&iss=<publicUrl>` (RFC 9207 `iss`). For a custom-scheme
   * redirect (`request.needsConfirmation`) serve {@link confirmationPage} with this URL
   * instead of redirecting. The app session is created when the code is redeemed.
   * @throws AtProtoBadRequestError when native apps are not enabled or the redirect URI is
   * no longer allowed
   */
  async issueCode(did: string, request: NativeLoginRequest): Promise<URL> {
    const native = this.#native;
    if (!native) throw new AtProtoBadRequestError('Native apps are not enabled on this server.');
    if (!matchRedirectUri(request.redirectUri, native)) {
      throw new AtProtoBadRequestError(
        'This native login can no longer be completed (its redirect URI is not allowed any more). Start the login again from the app.',
      );
    }
    const code = randomBytes(32).toString('base64url');
    const now = Date.now();
    await this.store.createCode({
      id: sha256Hex(code),
      did,
      redirectUri: request.redirectUri,
      codeChallenge: request.codeChallenge,
      createdAt: new Date(now),
      expiresAt: new Date(now + NATIVE_CODE_TTL_MS),
      usedAt: null,
    });
    const url = new URL(request.redirectUri);
    url.searchParams.set('code', code);
    if (request.state !== undefined) url.searchParams.set('state', request.state);
    url.searchParams.set('iss', this.options.publicUrl);
    return url;
  }

  /**
   * The page shown before sending the browser to a custom-scheme redirect: it names the
   * service and the app, and the user continues with a link (no script). Any app on the
   * device can claim a custom scheme (RFC 8252 §8.6), and the PDS may skip its consent
   * screen for a returning user, so a login must not end in an app without the user seeing
   * where it goes. Serve it with the headers of {@link NATIVE_CONFIRMATION_PAGE_HEADERS}.
   * @param url what {@link issueCode} returned
   * @param clientName the name users know this service by (the `clientName` option)
   */
  confirmationPage(url: URL, clientName: string): string {
    const app = url.protocol.slice(0, -1);
    const name = escapeHtml(clientName);
    return [
      '<!doctype html>',
      '<html lang="en">',
      '<head>',
      '<meta charset="utf-8">',
      '<meta name="viewport" content="width=device-width, initial-scale=1">',
      '<meta name="referrer" content="no-referrer">',
      `<title>Continue to the app - ${name}</title>`,
      '</head>',
      '<body>',
      '<main>',
      `<h1>Continue to the app</h1>`,
      `<p>You signed in to <strong>${name}</strong>. To finish, open the app that asked for ` +
        `this sign-in (<code>${escapeHtml(app)}</code>).</p>`,
      `<p><a href="${escapeHtml(url.href)}">Open the app</a></p>`,
      '<p>The link works once, for one minute. If you did not start this sign-in from an app ' +
        'on this device, close this page.</p>',
      '</main>',
      '</body>',
      '</html>',
      '',
    ].join('\n');
  }

  /**
   * `POST <prefix>/token` (form or JSON body): `grant_type=authorization_code` with `code`,
   * `code_verifier` and `redirect_uri` exchanges a one-time code for a token pair and opens
   * the app session; `grant_type=refresh_token` with `refresh_token` rotates it. Answer with
   * `Cache-Control: no-store`.
   *
   * Rotation: the current refresh token is consumed with one conditional UPDATE. Its
   * predecessor, presented within {@link REFRESH_GRACE_MS} of the rotation while the
   * successor is still unused, gets a new access token and the same successor (the same
   * string); presented later, or after the successor was used, or any older token, it ends
   * the family and the app session (reuse detection, RFC 9700 §4.14.2). A refresh counts as
   * activity of the app session, and fails once the app session has ended.
   * @param userAgent the `User-Agent` of the token request, kept with the app session
   * @throws AtProtoTokenError (400, RFC 6749 §5.2 `error`) for a bad request or grant;
   * nothing is changed, except that a reused refresh token ends its family
   * @throws AtProtoStoreError when the storage cannot be used right now (answer 503)
   */
  async token(body: unknown, userAgent?: string): Promise<NativeTokenResponse> {
    const tokens = this.#requireEnabled();
    const params = paramsOf(body);
    const grantType = param(params, 'grant_type');
    if (grantType === undefined) {
      throw new AtProtoTokenError(
        'invalid_request',
        'grant_type is required: authorization_code or refresh_token.',
      );
    }
    if (grantType === 'authorization_code') return this.#exchange(tokens, params, userAgent);
    if (grantType === 'refresh_token') return this.#refresh(tokens, params);
    throw new AtProtoTokenError(
      'unsupported_grant_type',
      'grant_type must be authorization_code or refresh_token.',
    );
  }

  async #exchange(
    tokens: NativeTokens,
    params: Record<string, unknown>,
    userAgent: string | undefined,
  ): Promise<NativeTokenResponse> {
    const code = required(params, 'code');
    const verifier = required(params, 'code_verifier');
    const redirectUri = required(params, 'redirect_uri');
    if (!VERIFIER_SYNTAX.test(verifier)) {
      throw new AtProtoTokenError(
        'invalid_request',
        'code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636).',
      );
    }
    const refused = new AtProtoTokenError(
      'invalid_grant',
      'The code is invalid, expired or already used, or code_verifier or redirect_uri does ' +
        'not match the login. Start the login again.',
    );
    if (!CODE_SYNTAX.test(code) || !matchRedirectUri(redirectUri, this.#native!)) throw refused;
    const now = new Date();
    // One conditional UPDATE consumes the code only if it is unused, unexpired, and bound to
    // this very challenge and redirect URI: a wrong verifier changes nothing, and two
    // exchanges of one code (two instances) cannot both succeed.
    const consumed = await this.store.consumeCode(
      sha256Hex(code),
      { codeChallenge: s256(verifier), redirectUri },
      now,
    );
    if (!consumed) throw refused;
    const { session } = await this.appSessions.create(
      consumed.did,
      typeof userAgent === 'string' ? userAgent : undefined,
    );
    const jti = randomBytes(32).toString('base64url');
    try {
      await this.store.createFamily({
        id: session.id,
        did: consumed.did,
        currentJti: jti,
        previousJti: null,
        rotatedAt: now,
        createdAt: now,
        expiresAt: session.expiresAt,
        revokedAt: null,
      });
    } catch (error) {
      // The code is spent: a session without refresh tokens would only linger as a device.
      await this.appSessions.revoke(session.id).catch((e: unknown) => {
        this.#logger.warn(`Could not revoke an unfinished native session: ${describeError(e)}`);
      });
      throw error;
    }
    this.events?.emit({ type: 'login', did: consumed.did, appSessionId: session.id });
    return this.#respond(tokens, consumed.did, session.id, jti, now, session.expiresAt);
  }

  async #refresh(
    tokens: NativeTokens,
    params: Record<string, unknown>,
  ): Promise<NativeTokenResponse> {
    const token = required(params, 'refresh_token');
    const claims = await tokens.verifyRefresh(token, this.#refreshMaxAgeS());
    if (!claims) {
      throw new AtProtoTokenError(
        'invalid_grant',
        'The refresh token is invalid or expired. Sign in again.',
      );
    }
    const ended = new AtProtoTokenError(
      'invalid_grant',
      'The session of this refresh token has ended. Sign in again.',
    );
    // The app session decides: revoked, expired or idle, its refresh tokens are dead too
    // (a revocation through AppSessionService reaches them this way). Validating it records
    // the refresh as activity.
    const session = await this.appSessions.validateId(claims.sid);
    if (!session || session.did !== claims.did) throw ended;
    // Two rounds at most: a rotation lost to a concurrent one is decided again on the row
    // the winner left, where the presented token is then the previous one.
    for (let round = 0; round < 2; round++) {
      const family = await this.store.getFamily(claims.sid);
      if (!family || family.revokedAt !== null || family.did !== claims.did) throw ended;
      const now = new Date();
      if (claims.jti === family.currentJti) {
        const next = randomBytes(32).toString('base64url');
        if (await this.store.rotateFamily(family.id, claims.jti, next, now)) {
          return this.#respond(tokens, claims.did, family.id, next, now, family.expiresAt);
        }
        continue;
      }
      if (
        claims.jti === family.previousJti &&
        now.getTime() - family.rotatedAt.getTime() <= REFRESH_GRACE_MS
      ) {
        // The successor is unused (else this token would no longer be the previous one):
        // hand it out again, re-signed from what the row holds, so the very same string.
        return this.#respond(
          tokens,
          claims.did,
          family.id,
          family.currentJti,
          family.rotatedAt,
          family.expiresAt,
        );
      }
      await this.#endForReuse(family, now);
      throw new AtProtoTokenError(
        'invalid_grant',
        'This refresh token was already used, so it may have been stolen: the session has ' +
          'been ended. Sign in again.',
      );
    }
    throw ended;
  }

  /** Reuse detected: the app session first (it decides for refreshes and bearer requests). */
  async #endForReuse(family: NativeRefreshFamilyRecord, now: Date): Promise<void> {
    this.#logger.warn(
      `A rotated refresh token was presented again: ending app session ${family.id.slice(0, 12)}… ` +
        `of ${family.did} and its refresh tokens.`,
    );
    await this.appSessions.revoke(family.id);
    await this.store.revokeFamily(family.id, now);
    this.events?.emit({ type: 'native-refresh-reuse', did: family.did, appSessionId: family.id });
  }

  async #respond(
    tokens: NativeTokens,
    did: string,
    sid: string,
    refreshJti: string,
    refreshIssuedAt: Date,
    sessionEnd: Date,
  ): Promise<NativeTokenResponse> {
    const iat = Math.floor(Date.now() / 1000);
    const end = Math.floor(sessionEnd.getTime() / 1000);
    const exp = Math.min(iat + Math.floor(this.#native!.accessTokenTtlMs / 1000), end);
    const [access, refresh] = await Promise.all([
      tokens.signAccess({ did, sid, jti: randomBytes(16).toString('base64url'), iat, exp }),
      tokens.signRefresh({
        did,
        sid,
        jti: refreshJti,
        iat: Math.floor(refreshIssuedAt.getTime() / 1000),
        exp: end,
      }),
    ]);
    return {
      access_token: access,
      refresh_token: refresh,
      token_type: 'Bearer',
      expires_in: Math.max(0, exp - iat),
      did,
    };
  }

  /**
   * `POST <prefix>/revoke` (RFC 7009; form or JSON body): `token` (an access or refresh
   * token of this module), optional `token_type_hint`. A valid token ends its app session
   * and refresh-token family. An unknown, invalid or expired token is not an error (RFC 7009
   * §2.2): answer 200 either way, with `Cache-Control: no-store`.
   * @throws AtProtoTokenError `invalid_request` when `token` is missing or repeated
   */
  async revokeToken(body: unknown): Promise<void> {
    const tokens = this.#requireEnabled();
    const params = paramsOf(body);
    const token = required(params, 'token');
    const hint = param(params, 'token_type_hint');
    const asAccess = () => tokens.verifyAccess(token, this.#accessMaxAgeS());
    const asRefresh = () => tokens.verifyRefresh(token, this.#refreshMaxAgeS());
    const claims =
      hint === 'access_token'
        ? ((await asAccess()) ?? (await asRefresh()))
        : ((await asRefresh()) ?? (await asAccess()));
    if (!claims) return;
    const ended = await this.appSessions.revoke(claims.sid, { did: claims.did });
    await this.store.revokeFamily(claims.sid, new Date());
    this.#forgetSession(claims.sid);
    if (ended) {
      this.events?.emit({
        type: 'logout',
        did: claims.did,
        appSessionId: claims.sid,
        everywhere: false,
      });
    }
  }

  /**
   * The guard's synchronous path: what an access token says if it was verified before and
   * has not expired (the verified-token cache), else `undefined`: then call
   * `verifyAccessToken`. A hit costs no promise.
   * @internal
   */
  verifiedCached(token: string): { did: string; appSessionId: string } | undefined {
    if (!this.#tokens || token.length > MAX_TOKEN_LENGTH) return undefined;
    const hit = this.#verified.get(hash('sha256', token, 'base64url'));
    return hit !== undefined && hit.expiresAt > Date.now() ? hit : undefined;
  }

  /**
   * The DID and app session of a bearer access token, or `undefined` for anything that is
   * not a valid, unexpired access token of this module (a refresh token included). Never
   * throws. The guard must still check the app session (`AppSessionService.validateId`) on
   * every request: this only proves the token was issued here and has not expired.
   */
  async verifyAccessToken(token: string): Promise<NativeAccessTokenInfo | undefined> {
    const tokens = this.#tokens;
    if (!tokens || typeof token !== 'string') return undefined;
    if (token.length > MAX_TOKEN_LENGTH || !JWT_SHAPE.test(token)) return undefined;
    try {
      const key = hash('sha256', token, 'base64url');
      const now = Date.now();
      const hit = this.#verified.get(key);
      if (hit) {
        if (hit.expiresAt > now) return info(hit);
        this.#verified.delete(key);
      }
      const claims = await tokens.verifyAccess(token, this.#accessMaxAgeS());
      if (!claims) return undefined;
      const entry = { did: claims.did, appSessionId: claims.sid, expiresAt: claims.expiresAt };
      if (entry.expiresAt <= Date.now()) return undefined;
      this.#verified.set(key, entry);
      if (this.#verified.size > ACCESS_TOKEN_CACHE_MAX_ENTRIES) {
        this.#verified.delete(this.#verified.keys().next().value as string);
      }
      return info(entry);
    } catch (error) {
      this.#logger.warn(`Verifying a bearer token failed: ${describeError(error)}`);
      return undefined;
    }
  }

  /** Verified access tokens held in the cache. @internal */
  get verifiedTokenCacheSize(): number {
    return this.#verified.size;
  }

  /**
   * Whether `did` has a native login under way: a code issued and not yet exchanged nor
   * expired. Until it is exchanged no app session exists, so cleanup and logout must count
   * it as a use of the DID's OAuth session, or they could revoke the session the app is
   * about to use.
   */
  async hasPendingLogin(did: string): Promise<boolean> {
    if (!this.#native) return false;
    return this.store.hasPendingCode(did, new Date());
  }

  #forgetSession(sid: string): void {
    for (const [key, entry] of this.#verified) {
      if (entry.appSessionId === sid) this.#verified.delete(key);
    }
  }

  #requireEnabled(): NativeTokens {
    if (!this.#tokens) {
      throw new AtProtoTokenError('invalid_request', 'Native apps are not enabled on this server.');
    }
    return this.#tokens;
  }

  /** An access token is at most one lifetime old (and its `iat` not in the future). */
  #accessMaxAgeS(): number {
    return Math.ceil(this.#native!.accessTokenTtlMs / 1000);
  }

  /** A refresh token is at most one app-session lifetime old. */
  #refreshMaxAgeS(): number {
    return Math.ceil(this.options.appSession.absoluteTtlMs / 1000);
  }
}

/**
 * Headers to serve {@link AtProtoNativeService.confirmationPage} with: not cached (it holds
 * a code), not framed, no script or style from anywhere, no referrer.
 * @internal
 */
export const NATIVE_CONFIRMATION_PAGE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'text/html; charset=utf-8',
  'Cache-Control': 'no-store',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
};

/**
 * Headers of every answer of the token and revocation endpoints (RFC 6749 §5.1).
 * @internal
 */
export const NATIVE_TOKEN_RESPONSE_HEADERS: Readonly<Record<string, string>> = {
  'Cache-Control': 'no-store',
  Pragma: 'no-cache',
};

function info(entry: { did: string; appSessionId: string; expiresAt: number }) {
  return { did: entry.did, appSessionId: entry.appSessionId, expiresAt: new Date(entry.expiresAt) };
}

function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

/** The S256 challenge of a verifier (RFC 7636 §4.2). */
function s256(verifier: string): string {
  return createHash('sha256').update(verifier, 'ascii').digest('base64url');
}

function paramsOf(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new AtProtoTokenError(
      'invalid_request',
      'Send the parameters as a form (application/x-www-form-urlencoded) or a JSON object.',
    );
  }
  return body as Record<string, unknown>;
}

/**
 * A parameter given at most once, as a string; an empty one counts as omitted (RFC 6749
 * §3.1). A repeated or structured one is `invalid_request` (RFC 6749 §3.2).
 */
function param(params: Record<string, unknown>, name: string): string | undefined {
  const value = Object.hasOwn(params, name) ? params[name] : undefined;
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') {
    throw new AtProtoTokenError('invalid_request', `${name} must be given once, as a string.`);
  }
  return value;
}

function required(params: Record<string, unknown>, name: string): string {
  const value = param(params, name);
  if (value === undefined) {
    throw new AtProtoTokenError('invalid_request', `${name} is required.`);
  }
  return value;
}

function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}
