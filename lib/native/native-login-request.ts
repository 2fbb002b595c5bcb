import { AtProtoBadRequestError } from '../errors/at-proto-http.errors.js';
import {
  isCustomSchemeRedirect,
  matchRedirectUri,
  REDIRECT_URI_MAX_LENGTH,
  type ResolvedNativeOptions,
} from './native-options.js';

/**
 * A native app's login request, checked: where to send the one-time code, the PKCE
 * challenge it is bound to, and the app's own `state`.
 * @internal
 */
export interface NativeLoginRequest {
  /** The redirect URI exactly as the app sent it (a loopback one with its port). */
  readonly redirectUri: string;
  /** The S256 PKCE challenge: 43 base64url characters. */
  readonly codeChallenge: string;
  /** The app's `state`, handed back with the code, or `undefined` when it sent none. */
  readonly state: string | undefined;
  /**
   * Whether the redirect goes through a custom scheme: the callback then shows a
   * confirmation page naming the app (`AtProtoNativeService.confirmationPage`) instead of
   * redirecting at once, because another app on the device can claim the scheme (RFC 8252
   * §8.6) and the PDS may skip its consent screen for a returning user.
   */
  readonly needsConfirmation: boolean;
}

/**
 * The compact form of a {@link NativeLoginRequest} kept in the OAuth state's `appState`
 * (JSON) between `/login` and `/callback`. Short keys: `u` redirect URI, `c` challenge, `s`
 * app state.
 * @internal
 */
export interface NativeLoginAppState {
  u: string;
  c: string;
  s?: string;
}

/** The S256 challenge: BASE64URL(SHA-256(verifier)) without padding, RFC 7636 §4.2. */
const CODE_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;
/** Longest app `state` accepted. @internal */
export const NATIVE_STATE_MAX_LENGTH = 512;
/** RFC 6749 Appendix A.5: `state` is VSCHAR, printable ASCII and space. */
const STATE_CHARS = /^[\x20-\x7e]+$/;

/**
 * The native login request carried by a `/login` query, checked against the options; or
 * `undefined` when there is no `redirect_uri` (a browser login).
 *
 * Rules: `redirect_uri` on the allow-list (exactly; any port for `http://127.0.0.1` and
 * `http://[::1]`), `code_challenge` of 43 base64url characters, `code_challenge_method`
 * present and `S256` (RFC 7636 would default to `plain`, which gives no protection here),
 * `state` at most 512 printable ASCII characters; no `returnTo`. Each parameter at most once.
 * @throws AtProtoBadRequestError (a 400) saying what is wrong; nothing is echoed back
 * @internal
 */
export function parseNativeLoginRequest(
  query: Record<string, unknown>,
  options: ResolvedNativeOptions | undefined,
): NativeLoginRequest | undefined {
  const redirectUri = single(query, 'redirect_uri');
  if (redirectUri === undefined) {
    if (query.code_challenge !== undefined || query.code_challenge_method !== undefined) {
      throw new AtProtoBadRequestError(
        'code_challenge was sent without redirect_uri: a native login needs both.',
      );
    }
    return undefined;
  }
  if (!options) {
    throw new AtProtoBadRequestError(
      'This server does not accept native or CLI app logins (redirect_uri): native apps are not enabled.',
    );
  }
  if (query.returnTo !== undefined) {
    throw new AtProtoBadRequestError(
      'returnTo and redirect_uri cannot be used together: returnTo is for browser logins, redirect_uri for native apps.',
    );
  }
  if (redirectUri.length > REDIRECT_URI_MAX_LENGTH || !matchRedirectUri(redirectUri, options)) {
    throw new AtProtoBadRequestError(
      /^http:\/\/localhost[:/]/i.test(redirectUri)
        ? 'redirect_uri uses localhost: use http://127.0.0.1 (or http://[::1]) with your port instead.'
        : 'redirect_uri is not one this server allows: it must match a registered redirect URI exactly.',
    );
  }
  const codeChallenge = single(query, 'code_challenge');
  if (codeChallenge === undefined) {
    throw new AtProtoBadRequestError(
      'code_challenge is required with redirect_uri (PKCE, S256: 43 base64url characters).',
    );
  }
  if (!CODE_CHALLENGE.test(codeChallenge)) {
    throw new AtProtoBadRequestError(
      'code_challenge must be the S256 challenge: 43 base64url characters (BASE64URL(SHA-256(code_verifier)), no padding).',
    );
  }
  const method = single(query, 'code_challenge_method');
  if (method !== 'S256') {
    throw new AtProtoBadRequestError(
      method === undefined
        ? 'code_challenge_method is required: send code_challenge_method=S256.'
        : 'code_challenge_method must be S256 (plain is not accepted).',
    );
  }
  const state = single(query, 'state');
  if (state !== undefined && state !== '' && !isValidState(state)) {
    throw new AtProtoBadRequestError(
      `state must be at most ${NATIVE_STATE_MAX_LENGTH} printable ASCII characters.`,
    );
  }
  return {
    redirectUri,
    codeChallenge,
    state: state === '' ? undefined : state,
    needsConfirmation: isCustomSchemeRedirect(redirectUri),
  };
}

/**
 * The compact form of `request` to keep in the OAuth state's `appState`.
 * @internal
 */
export function toNativeLoginAppState(request: NativeLoginRequest): NativeLoginAppState {
  return request.state === undefined
    ? { u: request.redirectUri, c: request.codeChallenge }
    : { u: request.redirectUri, c: request.codeChallenge, s: request.state };
}

/**
 * The native login request kept in a login's `appState`, checked again (the allow-list may
 * have changed since the login started): `undefined` when `value` is `undefined` (a browser
 * login).
 * @throws AtProtoBadRequestError when `value` is not a valid native login, or its redirect
 * URI is no longer allowed
 * @internal
 */
export function fromNativeLoginAppState(
  value: unknown,
  options: ResolvedNativeOptions | undefined,
): NativeLoginRequest | undefined {
  if (value === undefined) return undefined;
  const v = value as Partial<Record<keyof NativeLoginAppState, unknown>>;
  const valid =
    typeof value === 'object' &&
    value !== null &&
    options !== undefined &&
    typeof v.u === 'string' &&
    matchRedirectUri(v.u, options) !== undefined &&
    typeof v.c === 'string' &&
    CODE_CHALLENGE.test(v.c) &&
    (v.s === undefined || (typeof v.s === 'string' && isValidState(v.s)));
  if (!valid) {
    throw new AtProtoBadRequestError(
      'This native login can no longer be completed (its redirect URI is not allowed any more). Start the login again from the app.',
    );
  }
  return {
    redirectUri: v.u as string,
    codeChallenge: v.c as string,
    state: v.s as string | undefined,
    needsConfirmation: isCustomSchemeRedirect(v.u as string),
  };
}

function isValidState(state: string): boolean {
  return state.length <= NATIVE_STATE_MAX_LENGTH && STATE_CHARS.test(state);
}

/** A query parameter given at most once, as a string; a repeated or structured one is a 400. */
function single(query: Record<string, unknown>, name: string): string | undefined {
  const value = query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') {
    throw new AtProtoBadRequestError(`${name} must be given once, as a string.`);
  }
  return value;
}
