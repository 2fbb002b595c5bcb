import { APP_PASSWORD, jwtExpiry, refusalReason, xrpcError } from './bot-xrpc.js';
import { resolveBotOptions } from './bot-options.js';

describe('refusalReason', () => {
  it.each([
    [401, 'AuthFactorTokenRequired', 'auth-factor-required'],
    [401, 'AccountTakedown', 'account-takedown'],
    [401, 'AccountDeactivated', 'account-deactivated'],
    [400, 'ExpiredToken', 'expired'],
    [400, 'InvalidToken', 'invalid'],
    [429, 'RateLimitExceeded', 'rate-limited'],
    [429, undefined, 'rate-limited'],
    [401, 'AuthenticationRequired', 'invalid-credentials'],
    [401, undefined, 'invalid-credentials'],
    [400, 'InvalidRequest', 'refused'],
  ] as const)('%i %s → %s', (status, error, reason) => {
    expect(refusalReason(status, error)).toBe(reason);
  });

  it('leaves server errors to be retried (no reason)', () => {
    expect(refusalReason(500, 'InternalServerError')).toBeUndefined();
    expect(refusalReason(502, undefined)).toBeUndefined();
  });
});

describe('xrpcError', () => {
  it('reads the name and message, bounded, from anything', () => {
    expect(xrpcError({ error: 'ExpiredToken', message: 'Token has been revoked' })).toEqual({
      error: 'ExpiredToken',
      message: 'Token has been revoked',
    });
    expect(xrpcError(undefined)).toEqual({ error: undefined, message: undefined });
    expect(xrpcError({ error: 42 })).toEqual({ error: undefined, message: undefined });
    expect(xrpcError({ error: 'x'.repeat(1000) }).error).toHaveLength(100);
  });
});

describe('jwtExpiry', () => {
  const jwt = (payload: unknown) =>
    `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`;
  it('reads exp in milliseconds', () => {
    expect(jwtExpiry(jwt({ exp: 1_800_000_000 }))).toBe(1_800_000_000_000);
  });
  it('is null when unreadable', () => {
    expect(jwtExpiry('garbage')).toBeNull();
    expect(jwtExpiry('a.%%%.c')).toBeNull();
    expect(jwtExpiry(jwt({ exp: 'soon' }))).toBeNull();
  });
});

describe('APP_PASSWORD', () => {
  it('matches what a PDS hands out, not account passwords', () => {
    expect(APP_PASSWORD.test('abcd-2345-efgh-6789')).toBe(true);
    expect(APP_PASSWORD.test('hunter2')).toBe(false);
    expect(APP_PASSWORD.test('abcd-2345-efgh-6789-')).toBe(false);
  });
});

describe('resolveBotOptions', () => {
  it('defaults refreshMargin to 60 s', () => {
    const problems: string[] = [];
    expect(resolveBotOptions(undefined, problems)).toEqual({ refreshMarginMs: 60_000 });
    expect(resolveBotOptions({ refreshMargin: 5000 }, problems)).toEqual({
      refreshMarginMs: 5000,
    });
    expect(problems).toEqual([]);
  });
  it('names each problem', () => {
    const problems: string[] = [];
    resolveBotOptions({ refreshMargn: 1 }, problems);
    resolveBotOptions('yes', problems);
    expect(problems).toEqual([
      expect.stringMatching(/^bots: unknown option "refreshMargn"/),
      expect.stringMatching(/^bots must be an object/),
    ]);
    const more: string[] = [];
    resolveBotOptions({ refreshMargin: 3_600_000 }, more);
    expect(more).toEqual([expect.stringMatching(/^bots.refreshMargin must be below 3600000/)]);
  });
});
