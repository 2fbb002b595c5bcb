import { z } from 'zod';

/**
 * Options of outbound service-auth tokens, the JWTs a user's PDS signs for another service
 * (see docs/service-auth.md). Milliseconds.
 * @publicApi
 */
export interface AtProtoServiceAuthOptions {
  /**
   * A cached token is handed out only while it stays valid at least this long: time for the
   * request that carries it to reach the audience, and for clocks that disagree a little.
   * Below 1 h (the longest token a PDS issues). @default 10000
   */
  margin?: number;
  /**
   * How long a token is cached when its expiry cannot be read from it (a warning is
   * logged): below the 60 s a PDS gives a token by default. At most 1 h. @default 50000
   */
  fallbackTtl?: number;
  /** How often expired tokens are dropped from the in-process cache. @default 60000 */
  sweepInterval?: number;
}

/**
 * The service-auth options after validation.
 * @internal
 */
export interface ResolvedServiceAuthOptions {
  readonly marginMs: number;
  readonly fallbackTtlMs: number;
  readonly sweepIntervalMs: number;
}

/** @internal */
export const SERVICE_AUTH_DEFAULTS: ResolvedServiceAuthOptions = {
  marginMs: 10_000,
  fallbackTtlMs: 50_000,
  sweepIntervalMs: 60_000,
};

const HOUR = 3_600_000;
const millis = (name: string) =>
  z
    .number({ error: `serviceAuth.${name} must be a number of milliseconds` })
    .int({ error: `serviceAuth.${name} must be a whole number of milliseconds` });

const schema = z
  .object({
    margin: millis('margin')
      .min(0, { error: 'serviceAuth.margin must be >= 0' })
      .max(HOUR - 1, {
        error:
          'serviceAuth.margin must be below 3600000 ms (1 h, the longest token a PDS issues): no token would ever be cached',
      })
      .optional(),
    fallbackTtl: millis('fallbackTtl')
      .min(1, { error: 'serviceAuth.fallbackTtl must be positive' })
      .max(HOUR, { error: 'serviceAuth.fallbackTtl must be at most 3600000 ms (1 h)' })
      .optional(),
    sweepInterval: millis('sweepInterval')
      .min(1000, { error: 'serviceAuth.sweepInterval must be at least 1000 ms' })
      .max(86_400_000, { error: 'serviceAuth.sweepInterval must be at most 86400000 ms (1 day)' })
      .optional(),
  })
  // Unknown keys are refused: a misspelt option would otherwise be dropped silently.
  .strict();

/**
 * Validates `serviceAuth` and fills in the defaults. Pushes one line per problem onto
 * `problems`; the returned value is only meaningful when none was pushed.
 * @internal
 */
export function resolveServiceAuthOptions(
  raw: unknown,
  problems: string[],
): ResolvedServiceAuthOptions {
  const defaults = SERVICE_AUTH_DEFAULTS;
  if (raw === undefined) return defaults;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    problems.push('serviceAuth must be an object: { margin?, fallbackTtl?, sweepInterval? }');
    return defaults;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          problems.push(
            `serviceAuth: unknown option ${JSON.stringify(key)} (known: margin, fallbackTtl, sweepInterval)`,
          );
        }
      } else {
        problems.push(issue.message);
      }
    }
    return defaults;
  }
  return {
    marginMs: parsed.data.margin ?? defaults.marginMs,
    fallbackTtlMs: parsed.data.fallbackTtl ?? defaults.fallbackTtlMs,
    sweepIntervalMs: parsed.data.sweepInterval ?? defaults.sweepIntervalMs,
  };
}
