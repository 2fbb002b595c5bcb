import { parse, serialize, type SerializeOptions } from 'cookie';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';

/** The parts of a Node/Express request the module reads. @internal */
export interface HttpRequestLike {
  method?: string;
  headers: Record<string, string | string[] | undefined>;
  [key: string]: unknown;
}

/** The parts of an Express response the module writes. @internal */
export interface HttpResponseLike {
  getHeader(name: string): number | string | string[] | undefined;
  setHeader(name: string, value: number | string | readonly string[]): unknown;
}

function header(req: HttpRequestLike, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Every value of a header (Node gives an array for some repeated headers). */
function values(req: HttpRequestLike, name: string): string[] {
  const value = req.headers[name];
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

/** @internal */
export function readCookie(req: HttpRequestLike, name: string): string | undefined {
  const raw = header(req, 'cookie');
  if (!raw || raw.length > 16_384) return undefined;
  return parse(raw)[name];
}

/** Every cookie of the request (empty when there is none or the header is oversized). @internal */
export function readCookies(req: HttpRequestLike): Record<string, string | undefined> {
  const raw = header(req, 'cookie');
  if (!raw || raw.length > 16_384) return {};
  return parse(raw);
}

/** @internal */
export function appendSetCookie(res: HttpResponseLike, cookie: string): void {
  const existing = res.getHeader('Set-Cookie');
  const list =
    existing === undefined ? [] : Array.isArray(existing) ? existing : [String(existing)];
  res.setHeader('Set-Cookie', [...list, cookie]);
}

/** Attributes every cookie of the module shares. @internal */
export function cookieAttributes(
  options: ResolvedAtProtoOptions,
  maxAgeMs: number,
): SerializeOptions {
  return {
    httpOnly: true,
    secure: options.cookie.secure,
    sameSite: options.cookie.sameSite,
    path: '/',
    ...(options.cookie.domain ? { domain: options.cookie.domain } : {}),
    maxAge: Math.floor(maxAgeMs / 1000),
  };
}

/** @internal */
export function setCookie(
  res: HttpResponseLike,
  options: ResolvedAtProtoOptions,
  name: string,
  value: string,
  maxAgeMs: number,
): void {
  appendSetCookie(res, serialize(name, value, cookieAttributes(options, maxAgeMs)));
}

/** @internal */
export function clearCookie(
  res: HttpResponseLike,
  options: ResolvedAtProtoOptions,
  name: string,
): void {
  appendSetCookie(
    res,
    serialize(name, '', { ...cookieAttributes(options, 0), expires: new Date(0) }),
  );
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Whether a state-changing request comes from another site, judged by what browsers send:
 * an `Origin` listed in `trustedOrigins` is accepted; otherwise `Sec-Fetch-Site` when
 * present (all current browsers), otherwise `Origin`. A request with
 * neither is not from a browser form or script (those always send `Origin` on POST), so it
 * cannot ride on a victim's cookies and is let through.
 * @internal
 */
export function isCrossSiteRequest(
  req: HttpRequestLike,
  appOrigin: string,
  trustedOrigins: readonly string[] = [],
): boolean {
  if (SAFE_METHODS.has((req.method ?? 'GET').toUpperCase())) return false;
  // A page of a trusted origin (a single-page app the app's owner lists): its requests are
  // cross-origin by design. Browsers always send Origin on such unsafe requests, and a page
  // cannot forge it.
  const origins = values(req, 'origin');
  if (origins.length === 1 && trustedOrigins.includes(origins[0]!)) return false;
  const site = header(req, 'sec-fetch-site');
  if (site) return site !== 'same-origin' && site !== 'none';
  const origin = header(req, 'origin');
  if (origin) return origin !== appOrigin;
  return false;
}

/** The origin of a URL or origin string, or `undefined` when it is not one (e.g. `null`). */
function originOf(value: string): string | undefined {
  if (!URL.canParse(value)) return undefined;
  const { origin } = new URL(value);
  // Opaque origins (data:, file: and the like) serialize as "null": never the app's.
  return origin === 'null' ? undefined : origin;
}

/**
 * Whether a navigation (`GET /login`) was started by another site, which must not start a
 * login in the user's browser (login CSRF).
 *
 * - `Sec-Fetch-Site`, sent by every current browser, decides when present: `cross-site` and
 *   `same-site` are refused; `same-origin` and `none` (typed URL, bookmark) pass.
 * - Without it (older browsers), `Origin` and then `Referer`: the navigation is refused when
 *   either is present and is not `appOrigin` (an opaque `Origin: null` or a value that is not
 *   a URL included; every value of a repeated header must match).
 * - With none of them (a typed URL or a bookmark in an older browser) it passes.
 *
 * Not covered: an older browser that sends neither `Origin` nor `Referer` for a cross-site
 * link (a page with `Referrer-Policy: no-referrer`, or a link opened from another app)
 * passes, as a typed URL does.
 * @internal
 */
export function isCrossSiteNavigation(req: HttpRequestLike, appOrigin: string): boolean {
  const site = header(req, 'sec-fetch-site');
  if (site === 'cross-site' || site === 'same-site') return true;
  if (site === 'same-origin' || site === 'none') return false;
  // No Fetch Metadata (or a value the specification does not define): judge by the others.
  const ours = originOf(appOrigin) ?? appOrigin;
  const foreign = (name: string) =>
    values(req, name).some((value) => value !== '' && originOf(value) !== ours);
  return foreign('origin') || foreign('referer');
}

/** Whether the client would rather get a page (form submit) than JSON. @internal */
export function wantsHtml(req: HttpRequestLike): boolean {
  const accept = header(req, 'accept') ?? '';
  return accept.includes('text/html');
}
