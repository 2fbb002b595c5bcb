import { z } from 'zod';

/**
 * Options of API keys for bots and services (see docs/api-keys.md).
 * @publicApi
 */
export interface AtProtoApiKeyOptions {
  /**
   * What every key starts with, so that secret scanners can match a leaked key and the guard
   * can tell a key from an access token: 3 to 16 ASCII letters, digits, `_` or `-`, starting
   * with a letter and ending with `_` or `-` (e.g. `acme_`). Keys carry it, so changing it
   * later invalidates every key already handed out. @default 'atp_'
   */
  prefix?: string;
  /**
   * `last_used_at` is written at most this often per key (1 s to 1 day), in milliseconds:
   * a key used on every request costs one write per interval, not one per request.
   * @default 300000 (5 minutes)
   */
  lastUsedInterval?: number;
  /**
   * Revoked and expired keys are kept this long (they still show in `list`, marked ended)
   * before cleanup deletes them, in milliseconds. @default 86400000 (1 day)
   */
  revokedGrace?: number;
}

/**
 * The API-key options after validation.
 * @internal
 */
export interface ResolvedApiKeyOptions {
  readonly prefix: string;
  readonly lastUsedIntervalMs: number;
  readonly revokedGraceMs: number;
}

/** @internal */
export const API_KEY_DEFAULTS = {
  prefix: 'atp_',
  lastUsedIntervalMs: 5 * 60_000,
  revokedGraceMs: 86_400_000,
} as const;

// A fixed, distinctive string a scanner's regex can anchor on (GitHub's `ghp_`, Stripe's
// `sk_live_`): ASCII only, a letter first, and a separator last so that the base62 body
// that follows never runs into it. At least 3 characters, since a 2-character prefix
// matches too much text to be useful to a scanner.
const PREFIX_SYNTAX = /^[A-Za-z][A-Za-z0-9_-]{1,14}[_-]$/;
const PREFIX_RULE =
  '3 to 16 ASCII letters, digits, "_" or "-", starting with a letter and ending with "_" or "-" (e.g. "atp_")';

const schema = z
  .object({
    prefix: z
      .string({ error: `apiKeys.prefix must be a string of ${PREFIX_RULE}` })
      .refine((v) => PREFIX_SYNTAX.test(v), { error: `apiKeys.prefix must be ${PREFIX_RULE}` })
      .refine((v) => !v.startsWith('eyJ'), {
        // Every JWT (a bearer access token) starts with "eyJ" (base64url of `{"`): such a
        // prefix would make the two credentials ambiguous on the wire.
        error: `apiKeys.prefix must not start with "eyJ", as every JWT does: choose ${PREFIX_RULE}`,
      })
      .optional(),
    lastUsedInterval: z
      .number({ error: 'apiKeys.lastUsedInterval must be a number of milliseconds' })
      .int({ error: 'apiKeys.lastUsedInterval must be a whole number of milliseconds' })
      .min(1000, {
        error:
          'apiKeys.lastUsedInterval must be at least 1000 ms: it bounds how often a busy key writes to the database',
      })
      .max(86_400_000, { error: 'apiKeys.lastUsedInterval must be at most 86400000 ms (1 day)' })
      .optional(),
    revokedGrace: z
      .number({ error: 'apiKeys.revokedGrace must be a number of milliseconds' })
      .int({ error: 'apiKeys.revokedGrace must be a whole number of milliseconds' })
      .min(0, { error: 'apiKeys.revokedGrace must be >= 0' })
      .optional(),
  })
  // Unknown keys are refused: a misspelt option would otherwise be dropped silently.
  .strict();

/**
 * Validates `apiKeys` and fills in the defaults (always resolved: keys are created through
 * the service, so their settings exist even when no route accepts them). Pushes one line
 * per problem onto `problems`; the returned value is only meaningful when none was pushed.
 * @internal
 */
export function resolveApiKeyOptions(raw: unknown, problems: string[]): ResolvedApiKeyOptions {
  const defaults: ResolvedApiKeyOptions = { ...API_KEY_DEFAULTS };
  if (raw === undefined) return defaults;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    problems.push('apiKeys must be an object: { prefix?, lastUsedInterval?, revokedGrace? }');
    return defaults;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          problems.push(
            `apiKeys: unknown option ${JSON.stringify(key)} (known: prefix, lastUsedInterval, revokedGrace)`,
          );
        }
      } else {
        problems.push(issue.message);
      }
    }
    return defaults;
  }
  return {
    prefix: parsed.data.prefix ?? defaults.prefix,
    lastUsedIntervalMs: parsed.data.lastUsedInterval ?? defaults.lastUsedIntervalMs,
    revokedGraceMs: parsed.data.revokedGrace ?? defaults.revokedGraceMs,
  };
}
