import type { AtProtoBotSessionErrorReason } from '../errors/at-proto-bot-session.error.js';

/** An XRPC error answer: `{ error, message }`. @internal */
export interface XrpcErrorBody {
  readonly error: string | undefined;
  readonly message: string | undefined;
}

/** Reads `{ error, message }` from a JSON answer, whatever else it holds. @internal */
export function xrpcError(body: unknown): XrpcErrorBody {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  return {
    error: typeof b.error === 'string' ? b.error.slice(0, 100) : undefined,
    message: typeof b.message === 'string' ? b.message.slice(0, 500) : undefined,
  };
}

/**
 * The reason of a refused `createSession` or `refreshSession`, from the XRPC error name and
 * the status; `undefined` for an answer that says the PDS is in trouble (5xx): try again.
 * @internal
 */
export function refusalReason(
  status: number,
  error: string | undefined,
): AtProtoBotSessionErrorReason | undefined {
  switch (error) {
    case 'AuthFactorTokenRequired':
      return 'auth-factor-required';
    case 'AccountTakedown':
      return 'account-takedown';
    case 'AccountDeactivated':
      return 'account-deactivated';
    case 'ExpiredToken':
      return 'expired';
    case 'InvalidToken':
      return 'invalid';
    case 'RateLimitExceeded':
      return 'rate-limited';
    case 'AuthenticationRequired':
      return 'invalid-credentials';
  }
  if (status === 429) return 'rate-limited';
  if (status === 401) return 'invalid-credentials';
  if (status >= 400 && status < 500) return 'refused';
  return undefined;
}

/** What each reason says to do. @internal */
export const REASON_MESSAGES: Record<AtProtoBotSessionErrorReason, string> = {
  'invalid-request': 'The bot login was not attempted: the identifier or password is empty.',
  'invalid-credentials': 'The PDS refused the bot identifier or app password.',
  'auth-factor-required':
    'The PDS asks for an email code to sign this account in: log bots in with an app password (xxxx-xxxx-xxxx-xxxx), which never asks for one.',
  'account-takedown': 'The bot account has been taken down by its PDS: its session has ended.',
  'account-deactivated': 'The bot account is deactivated: its session has ended.',
  expired:
    'The bot session has expired or was revoked (its app password deleted?): log the bot in again.',
  invalid: 'The PDS does not accept the bot session any more: log the bot in again.',
  'rate-limited':
    'The PDS limits this bot right now (30 logins per 5 minutes, 300 per day): try again later. The stored session is kept.',
  'not-logged-in': 'No stored session for this bot: call login() first.',
  refused: 'The PDS refused the bot request.',
};

/**
 * The `exp` of a JWT in epoch milliseconds, read without verifying it (these are the PDS's
 * own tokens, only used to decide when to refresh); `null` when unreadable.
 * @internal
 */
export function jwtExpiry(jwt: string): number | null {
  const payload = jwt.split('.')[1];
  if (!payload) return null;
  try {
    const claims: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) && exp > 0 ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** What an app password looks like: four groups of four lowercase letters or digits. @internal */
export const APP_PASSWORD = /^[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}$/;
