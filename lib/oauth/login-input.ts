import { AtProtoBadRequestError } from '../errors/at-proto-http.errors.js';

// Handle syntax from the AT Protocol spec (https://atproto.com/specs/handle): dot-separated
// labels of ASCII letters, digits and inner hyphens, at most 253 characters, and a last
// label that does not start with a digit.
const HANDLE =
  /^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
const DID_PLC = /^did:plc:[a-z2-7]{24}$/;
const DID_WEB = /^did:web:[a-zA-Z0-9._:%-]{1,253}$/;
/** Longest login input accepted; a handle is at most 253 characters. @internal */
export const MAX_LOGIN_INPUT = 2048;

/**
 * Checks what a user typed to log in: a handle (`alice.bsky.social`, an optional leading
 * `@` is dropped), a `did:plc` / `did:web`, or the https URL of a PDS or entryway.
 * Returns the normalized input, or throws {@link AtProtoBadRequestError}.
 * @internal
 */
export function normalizeLoginInput(raw: unknown, allowHttp: boolean): string {
  if (typeof raw !== 'string' || raw.trim() === '') {
    throw new AtProtoBadRequestError(
      'Enter your handle (e.g. alice.bsky.social), your DID, or your PDS URL.',
    );
  }
  const input = raw.trim();
  if (input.length > MAX_LOGIN_INPUT) {
    throw new AtProtoBadRequestError('The login input is too long.');
  }
  if (input.startsWith('did:')) {
    if (DID_PLC.test(input) || DID_WEB.test(input)) return input;
    throw new AtProtoBadRequestError('That DID is not a valid did:plc or did:web.');
  }
  if (/^https?:\/\//i.test(input)) {
    if (!URL.canParse(input)) throw new AtProtoBadRequestError('That server URL is not valid.');
    const url = new URL(input);
    const okProtocol = url.protocol === 'https:' || (allowHttp && url.protocol === 'http:');
    if (!okProtocol || url.username || url.password || url.search || url.hash) {
      throw new AtProtoBadRequestError(
        'A server URL must be https, without credentials, query or fragment.',
      );
    }
    return url.origin;
  }
  const handle = input.startsWith('@') ? input.slice(1) : input;
  if (handle.length <= 253 && HANDLE.test(handle)) return handle.toLowerCase();
  throw new AtProtoBadRequestError(
    'That is not a valid handle: use the form alice.bsky.social (letters, digits, hyphens and dots, at most 253 characters).',
  );
}

/**
 * Checks a `returnTo` value: it must be a path on this app (`/…`), not an absolute,
 * protocol-relative or backslash URL that would send the browser elsewhere; or an absolute
 * URL whose origin is exactly one of `trustedOrigins` (a single-page app on another origin).
 * @internal
 */
export function normalizeReturnTo(
  raw: unknown,
  publicUrl: string,
  fallback: string,
  trustedOrigins: readonly string[] = [],
): string {
  if (raw === undefined || raw === null || raw === '') return fallback;
  if (typeof raw !== 'string' || raw.length > 2048) {
    throw new AtProtoBadRequestError('returnTo must be a path on this app.');
  }
  if (trustedOrigins.length > 0 && /^https?:\/\//i.test(raw)) {
    // eslint-disable-next-line no-control-regex -- control characters are what we refuse
    const url = URL.canParse(raw) && !/[\\\x00-\x1f\x7f]/.test(raw) ? new URL(raw) : undefined;
    if (url && !url.username && !url.password && trustedOrigins.includes(url.origin)) {
      return url.href;
    }
    throw new AtProtoBadRequestError(
      'returnTo must be a path on this app or a URL on one of its trusted origins.',
    );
  }
  // Browsers treat "\" like "/" and ignore tabs and newlines, so "/\evil.com" and
  // "/\t/evil.com" are protocol-relative in disguise.
  // eslint-disable-next-line no-control-regex -- control characters are what we refuse
  if (!raw.startsWith('/') || raw.startsWith('//') || /[\\\x00-\x1f\x7f]/.test(raw)) {
    throw new AtProtoBadRequestError(
      'returnTo must be a path on this app, starting with a single "/".',
    );
  }
  const base = new URL(publicUrl.endsWith('/') ? publicUrl : `${publicUrl}/`);
  const target = new URL(raw, base.origin);
  if (target.origin !== base.origin) {
    throw new AtProtoBadRequestError('returnTo must stay on this app.');
  }
  const path = `${target.pathname}${target.search}${target.hash}`;
  // URL parsing resolves dot segments: "/.//evil.com" and "/%2e%2e//evil.com" come out as
  // "//evil.com". Check what will actually be sent, not only what came in.
  if (path.startsWith('//') || path.startsWith('/\\')) {
    throw new AtProtoBadRequestError('returnTo must stay on this app.');
  }
  return path;
}
