import { z } from 'zod';

/**
 * Options of bot accounts on app passwords (see docs/bots.md), milliseconds.
 * @publicApi
 */
export interface AtProtoBotOptions {
  /**
   * A bot session's access JWT is refreshed (once, under the bot's lock) when it expires
   * within this margin, before the call is sent: the PDS's access JWTs live 2 h, and a call
   * sent with one about to expire would be refused on arrival. Below 1 h. @default 60000
   */
  refreshMargin?: number;
}

/**
 * The bot options after validation.
 * @internal
 */
export interface ResolvedBotOptions {
  readonly refreshMarginMs: number;
}

/** @internal */
export const BOT_DEFAULTS: ResolvedBotOptions = { refreshMarginMs: 60_000 };

const schema = z
  .object({
    refreshMargin: z
      .number({ error: 'bots.refreshMargin must be a number of milliseconds' })
      .int({ error: 'bots.refreshMargin must be a whole number of milliseconds' })
      .min(0, { error: 'bots.refreshMargin must be >= 0' })
      .max(3_599_999, {
        error:
          'bots.refreshMargin must be below 3600000 ms (1 h): access JWTs live 2 h, every call would refresh',
      })
      .optional(),
  })
  // Unknown keys are refused: a misspelt option would otherwise be dropped silently.
  .strict();

const KNOWN = ['refreshMargin'];

/**
 * Validates `bots` and fills in the defaults. Pushes one line per problem onto `problems`;
 * the returned value is only meaningful when none was pushed.
 * @internal
 */
export function resolveBotOptions(raw: unknown, problems: string[]): ResolvedBotOptions {
  if (raw === undefined) return BOT_DEFAULTS;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    problems.push(`bots must be an object: { ${KNOWN.join('?, ')}? }`);
    return BOT_DEFAULTS;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          problems.push(`bots: unknown option ${JSON.stringify(key)} (known: ${KNOWN.join(', ')})`);
        }
      } else {
        problems.push(issue.message);
      }
    }
    return BOT_DEFAULTS;
  }
  return { refreshMarginMs: parsed.data.refreshMargin ?? BOT_DEFAULTS.refreshMarginMs };
}
