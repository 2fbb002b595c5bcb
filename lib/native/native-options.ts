import { createHash } from 'node:crypto';

/**
 * Options of native and CLI apps (token pairs). The module runs the AT Protocol login for
 * the app, then hands it a one-time code it exchanges at `POST <prefix>/token`.
 * @publicApi
 */
export interface AtProtoNativeOptions {
  /**
   * Redirect URIs apps may ask for, matched exactly (scheme, host, path), without a query or
   * fragment: custom schemes named after a domain you control (`com.example.app:/callback`,
   * one slash), claimed https URLs, and for CLIs `http://127.0.0.1/<path>` or
   * `http://[::1]/<path>`, written without a port: any port is accepted there (RFC 8252
   * §7.3). `localhost` and wildcards are refused.
   */
  redirectUris: string[];
  /**
   * HS256 secrets that sign access and refresh tokens, by id (like `encryption`): each the
   * base64 (or base64url) of at least 32 random bytes (`openssl rand -base64 32`), ids of 1
   * to 64 characters from `A-Z a-z 0-9 _ -`. `activeKid` signs new tokens; the others still
   * verify, so that a secret can be rotated without signing anyone out.
   */
  tokenSecrets: { activeKid: string; keys: Record<string, string> };
  /**
   * Lifetime of an access token, in milliseconds, from 1 minute to 1 hour.
   * @default 900000 (15 minutes)
   */
  accessTokenTtl?: number;
}

/**
 * The native options after validation.
 * @internal
 */
export interface ResolvedNativeOptions {
  /** The allow-list as configured (each entry in its normalized form). */
  readonly redirectUris: readonly string[];
  readonly activeKid: string;
  /** Secrets by kid, decoded. */
  readonly secrets: ReadonlyMap<string, Uint8Array>;
  readonly accessTokenTtlMs: number;
}

/** @internal */
export const NATIVE_DEFAULTS = {
  accessTokenTtlMs: 15 * 60_000,
  minAccessTokenTtlMs: 60_000,
  maxAccessTokenTtlMs: 60 * 60_000,
} as const;

/** Longest redirect URI accepted (the column holding it is this wide). @internal */
export const REDIRECT_URI_MAX_LENGTH = 2048;
const MIN_SECRET_BYTES = 32;
const MAX_SECRET_BYTES = 1024;
/**
 * Fewest distinct byte values a secret may have. 32 random bytes have 30.1 on average and
 * fewer than 16 with probability about 2^-55, so a constant or a repeated pattern fails
 * (the same rule as the encryption key ring's). It cannot tell a long passphrase written in
 * base64's alphabet from random bytes: the docs say to generate secrets
 * (`openssl rand -base64 32`), never to type them.
 */
const MIN_DISTINCT_BYTES = 16;
const KID = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest kid printed as is in a problem: a 32-byte secret is at least 43 characters. */
const MAX_SHOWN_KID = 40;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const KNOWN_KEYS = new Set(['redirectUris', 'tokenSecrets', 'accessTokenTtl']);
/** Printable ASCII without spaces: what a redirect URI of the allow-list may contain. */
const URI_CHARS = /^[\x21-\x7e]+$/;
/** A loopback redirect as the allow-list holds it: no port, a path, nothing else. */
const LOOPBACK_ENTRY = /^http:\/\/(?:127\.0\.0\.1|\[::1\])\/[^?#]*$/;
/** A loopback redirect as an app sends it: any port (or none), then the path. */
const LOOPBACK_REQUEST = /^http:\/\/(127\.0\.0\.1|\[::1\])(?::([1-9][0-9]{0,4}))?(\/[^?#]*)$/;
/** A private-use scheme per RFC 8252 §7.1: a reverse domain name (so at least one dot). */
const CUSTOM_SCHEME = /^[a-z][a-z0-9+-]*(?:\.[a-z0-9+-]+)+$/;
/** A private-use redirect: `scheme:/path`, one slash (RFC 8252 §7.1), no authority. */
const CUSTOM_REDIRECT = /^[a-z][a-z0-9+.-]*:\/(?!\/)[^?#]*$/;

/**
 * Validates `native`; pushes every problem found (never key material) and returns the
 * resolved options when there are none.
 * @internal
 */
export function resolveNativeOptions(
  raw: unknown,
  problems: string[],
): ResolvedNativeOptions | undefined {
  if (raw === undefined) return undefined;
  if (!isRecord(raw)) {
    problems.push(
      'native must be an object: { redirectUris: [...], tokenSecrets: { activeKid, keys } }.',
    );
    return undefined;
  }
  const before = problems.length;
  for (const key of Object.keys(raw)) {
    if (!KNOWN_KEYS.has(key)) {
      problems.push(
        `native.${printable(key)} is not an option (known: ${[...KNOWN_KEYS].join(', ')}).`,
      );
    }
  }
  const redirectUris = resolveRedirectUris(raw.redirectUris, problems);
  const secrets = resolveSecrets(raw.tokenSecrets, problems);
  const accessTokenTtlMs = resolveTtl(raw.accessTokenTtl, problems);
  if (problems.length > before || !redirectUris || !secrets) return undefined;
  return {
    redirectUris,
    activeKid: secrets.activeKid,
    secrets: secrets.map,
    accessTokenTtlMs,
  };
}

function resolveRedirectUris(raw: unknown, problems: string[]): string[] | undefined {
  if (!Array.isArray(raw) || raw.length === 0) {
    problems.push(
      'native.redirectUris must be a non-empty array of redirect URIs, e.g. ' +
        '["com.example.app:/oauth/callback", "http://127.0.0.1/callback"].',
    );
    return undefined;
  }
  const out: string[] = [];
  raw.forEach((entry: unknown, i) => {
    const problem = redirectUriProblem(entry);
    if (problem) problems.push(`native.redirectUris[${i}] ${problem}`);
    else if (!out.includes(entry as string)) out.push(entry as string);
  });
  return out;
}

/** What is wrong with one allow-list entry, or `undefined` when it is fine. */
function redirectUriProblem(entry: unknown): string | undefined {
  if (typeof entry !== 'string' || entry === '') return 'must be a non-empty string.';
  if (entry.length > REDIRECT_URI_MAX_LENGTH) {
    return `is longer than ${REDIRECT_URI_MAX_LENGTH} characters.`;
  }
  if (!URI_CHARS.test(entry)) {
    return 'must be printable ASCII without spaces (percent-encode anything else).';
  }
  const shown = JSON.stringify(entry.length > 80 ? `${entry.slice(0, 80)}…` : entry);
  if (entry.includes('*')) {
    return `${shown} has a wildcard: redirect URIs are matched exactly, list each one.`;
  }
  if (entry.includes('#')) return `${shown} must not have a fragment.`;
  if (entry.includes('?')) {
    return `${shown} must not have a query: the module adds code and state to it.`;
  }
  if (!URL.canParse(entry)) return `${shown} is not an absolute URI.`;
  const url = new URL(entry);
  const scheme = url.protocol.slice(0, -1);
  if (url.username !== '' || url.password !== '') return `${shown} must not carry credentials.`;
  if (scheme === 'http' || scheme === 'https') {
    // A trailing dot names the same host ("localhost." is localhost).
    const host = url.hostname.toLowerCase().replace(/\.$/, '');
    if (host === 'localhost' || host.endsWith('.localhost')) {
      return (
        `${shown} uses localhost: use http://127.0.0.1/… or http://[::1]/… (any port is ` +
        'accepted there). "localhost" can resolve to another address or be claimed by ' +
        'another program (RFC 8252 §8.3).'
      );
    }
  }
  if (scheme === 'http') {
    if (url.hostname !== '127.0.0.1' && url.hostname !== '[::1]') {
      return (
        `${shown} uses plain http on a host that is not a loopback IP: http is only for ` +
        'CLIs on http://127.0.0.1/… or http://[::1]/… (RFC 8252 §7.3); use https or a ' +
        'custom scheme.'
      );
    }
    if (!LOOPBACK_ENTRY.test(entry)) {
      return (
        `${shown}: write a loopback redirect URI without a port (any port is accepted, RFC ` +
        '8252 §7.3) and with a path, e.g. "http://127.0.0.1/callback".'
      );
    }
  } else if (scheme === 'https') {
    if (url.hostname === '') return `${shown} has no host.`;
  } else {
    if (!CUSTOM_SCHEME.test(scheme)) {
      return (
        `${shown}: a custom scheme must be a reverse domain name you control, such as ` +
        '"com.example.app" (RFC 8252 §7.1); other schemes are refused.'
      );
    }
    if (!CUSTOM_REDIRECT.test(entry)) {
      return (
        `${shown}: write a custom-scheme redirect URI with one slash after the scheme, e.g. ` +
        '"com.example.app:/callback" (RFC 8252 §7.1).'
      );
    }
  }
  if (url.href !== entry) {
    return (
      `${shown} is not in its normalized form ${JSON.stringify(url.href)}: apps must send it ` +
      'character for character, so list that form.'
    );
  }
  return undefined;
}

function resolveSecrets(
  raw: unknown,
  problems: string[],
): { activeKid: string; map: Map<string, Uint8Array> } | undefined {
  const usage =
    'native.tokenSecrets must be { activeKid: "<id>", keys: { "<id>": "<output of openssl rand -base64 32>" } }.';
  if (!isRecord(raw)) {
    problems.push(usage);
    return undefined;
  }
  const { activeKid, keys } = raw;
  if (!isRecord(keys) || Object.keys(keys).length === 0) {
    problems.push(`native.tokenSecrets.keys is empty. ${usage}`);
    return undefined;
  }
  const show = kidPrinter(Object.values(keys));
  const before = problems.length;
  const map = new Map<string, Uint8Array>();
  const seenIds = new Map<string, string>();
  // Keyed by a digest of the secret, so that the map holds no copy of it.
  const seenSecrets = new Map<string, string>();
  for (const [kid, value] of Object.entries(keys)) {
    if (!KID.test(kid)) {
      problems.push(
        `native.tokenSecrets.keys has an invalid id ${show(kid)}: use 1 to 64 characters from A-Z a-z 0-9 _ -.`,
      );
    }
    const earlier = seenIds.get(kid.toLowerCase());
    if (earlier !== undefined) {
      problems.push(
        `native.tokenSecrets.keys has duplicate id ${show(kid)} (same as ${show(earlier)}; ids ` +
          'are compared case-insensitively): give each secret its own id.',
      );
    } else {
      seenIds.set(kid.toLowerCase(), kid);
    }
    const bytes = decodeSecret(value);
    if (!bytes) {
      problems.push(
        `native.tokenSecrets.keys[${show(kid)}] is not base64: generate one with \`openssl rand -base64 32\`.`,
      );
      continue;
    }
    if (bytes.length < MIN_SECRET_BYTES || bytes.length > MAX_SECRET_BYTES) {
      problems.push(
        `native.tokenSecrets.keys[${show(kid)}] decodes to ${bytes.length} bytes; HS256 secrets ` +
          `must have ${MIN_SECRET_BYTES} to ${MAX_SECRET_BYTES}: generate one with \`openssl rand -base64 32\`.`,
      );
      continue;
    }
    const distinct = new Set(bytes).size;
    if (distinct < MIN_DISTINCT_BYTES) {
      problems.push(
        `native.tokenSecrets.keys[${show(kid)}] has only ${distinct} distinct byte value` +
          `${distinct === 1 ? '' : 's'}, so it is not random: generate one with \`openssl rand -base64 32\`.`,
      );
      continue;
    }
    const digest = createHash('sha256').update(bytes).digest('hex');
    const owner = seenSecrets.get(digest);
    if (owner !== undefined) {
      problems.push(
        `native.tokenSecrets.keys[${show(owner)}] and native.tokenSecrets.keys[${show(kid)}] ` +
          'hold the same secret: give each id its own (a rotation adds a new secret under a new id).',
      );
      continue;
    }
    seenSecrets.set(digest, kid);
    map.set(kid, new Uint8Array(bytes));
  }
  if (typeof activeKid !== 'string' || activeKid === '') {
    problems.push(
      'native.tokenSecrets.activeKid is required: name the secret in native.tokenSecrets.keys that signs new tokens.',
    );
  } else if (!Object.hasOwn(keys, activeKid)) {
    problems.push(
      `native.tokenSecrets.activeKid ${show(activeKid)} is not an id of native.tokenSecrets.keys ` +
        `(known: ${Object.keys(keys).map(show).join(', ')}).`,
    );
  }
  if (problems.length > before || typeof activeKid !== 'string') return undefined;
  return { activeKid, map };
}

function resolveTtl(raw: unknown, problems: string[]): number {
  if (raw === undefined) return NATIVE_DEFAULTS.accessTokenTtlMs;
  const { minAccessTokenTtlMs: min, maxAccessTokenTtlMs: max } = NATIVE_DEFAULTS;
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < min || raw > max) {
    problems.push(
      `native.accessTokenTtl must be a whole number of milliseconds from ${min} (1 minute) to ` +
        `${max} (1 hour); the default is ${NATIVE_DEFAULTS.accessTokenTtlMs} (15 minutes).`,
    );
    return NATIVE_DEFAULTS.accessTokenTtlMs;
  }
  return raw;
}

/** The bytes of a base64 or base64url secret, or `undefined` when it is neither. */
function decodeSecret(value: unknown): Buffer | undefined {
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (text === '') return undefined;
  if (BASE64.test(text)) return Buffer.from(text, 'base64');
  if (BASE64URL.test(text) && text.length % 4 !== 1) return Buffer.from(text, 'base64url');
  return undefined;
}

/**
 * A function that renders a kid for a problem without ever echoing a secret: a short,
 * valid kid that is not one of the secrets (in any encoding) is printed quoted; anything
 * else (a secret pasted in place of a kid) as its length and the first 6 hex digits of its
 * SHA-256, enough to tell which entry is meant.
 */
function kidPrinter(values: readonly unknown[]): (kid: string) => string {
  const digest = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
  const secrets = new Set(
    values
      .map(decodeSecret)
      .filter((b): b is Buffer => b !== undefined)
      .map(digest),
  );
  const isSecret = (kid: string) =>
    secrets.has(digest(Buffer.from(kid, 'utf8'))) ||
    (BASE64URL.test(kid) && secrets.has(digest(Buffer.from(kid, 'base64url')))) ||
    (/^(?:[0-9a-f]{2})+$/i.test(kid) && secrets.has(digest(Buffer.from(kid, 'hex'))));
  return (kid) => {
    if (KID.test(kid) && kid.length <= MAX_SHOWN_KID && !isSecret(kid)) return `"${kid}"`;
    const prefix = createHash('sha256').update(kid, 'utf8').digest('hex').slice(0, 6);
    return `(an id of ${kid.length} characters, SHA-256 ${prefix}…)`;
  };
}

/** An unknown option name, shortened and stripped of control characters for the message. */
function printable(key: string): string {
  const clean = key.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 40 ? `${clean.slice(0, 40)}…` : clean;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The allow-list entry a redirect URI sent by an app matches, or `undefined`: the exact
 * string for https and custom schemes; for `http://127.0.0.1` and `http://[::1]`, the URI
 * with its port taken out (any port is accepted there, RFC 8252 §7.3).
 * @internal
 */
export function matchRedirectUri(
  uri: string,
  options: Pick<ResolvedNativeOptions, 'redirectUris'>,
): string | undefined {
  if (uri.length > REDIRECT_URI_MAX_LENGTH) return undefined;
  const loopback = LOOPBACK_REQUEST.exec(uri);
  let entry = uri;
  if (loopback) {
    const [, host, port, path] = loopback;
    if (port !== undefined && Number(port) > 65_535) return undefined;
    entry = `http://${host}${path}`;
  }
  return options.redirectUris.includes(entry) ? entry : undefined;
}

/**
 * Whether a redirect URI goes to an app through a private-use (custom) scheme, which any
 * app on the device can claim (RFC 8252 §8.6): the callback then shows a confirmation page.
 * @internal
 */
export function isCustomSchemeRedirect(uri: string): boolean {
  return !/^https?:/i.test(uri);
}
