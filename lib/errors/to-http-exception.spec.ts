import { BadRequestException } from '@nestjs/common';
import { TokenRefreshError } from '@atproto/oauth-client-node';
import { AtProtoLockError } from './at-proto-lock.error.js';
import { AtProtoStoreError } from './at-proto-store.error.js';
import { AtProtoUpstreamError } from './at-proto-http.errors.js';
import { AtProtoServiceAuthError } from './at-proto-service-auth.error.js';
import { AtProtoBotSessionError } from './at-proto-bot-session.error.js';
import { findMappedError, toHttpException } from './to-http-exception.js';

/** What an `Agent` (`@atproto/xrpc`) throws for an error of `session.fetchHandler()`. */
class XRPCError extends Error {
  constructor(
    readonly status: number,
    options?: { cause?: unknown },
  ) {
    super('Unknown', options);
  }
}

describe('findMappedError', () => {
  it('finds the module error an Agent wrapped', () => {
    const ended = new TokenRefreshError('did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', 'revoked');
    expect(
      findMappedError(new XRPCError(1, { cause: ended }), 'session')?.exception.getStatus(),
    ).toBe(401);
    const lock = new AtProtoLockError('busy');
    const found = findMappedError(new XRPCError(1, { cause: lock }), 'session');
    expect(found?.exception.getStatus()).toBe(503);
    expect(found?.error).toBe(lock);
  });

  it('looks inside an AggregateError (a failed session write) and maps storage to 503', () => {
    const store = new AtProtoStoreError('down');
    const aggregate = new AggregateError([new Error('revoke failed'), store], 'Failed to store');
    expect(findMappedError(aggregate, 'login')?.exception.getStatus()).toBe(503);
  });

  it('leaves alone errors that are not the module’s, and HTTP exceptions of the app', () => {
    expect(findMappedError(new XRPCError(400), 'session')).toBeUndefined();
    expect(findMappedError(new Error('x', { cause: new Error('y') }), 'session')).toBeUndefined();
    const own = new BadRequestException('app says no');
    expect(toHttpException(own, 'session')).toBe(own);
    // What an HTTP exception wraps is not looked at: the app (or a route) has decided.
    const wrapped = new BadRequestException('app says no', { cause: new AtProtoLockError('x') });
    expect(findMappedError(wrapped, 'session')).toBeUndefined();
  });

  it('answers an unreachable server 502 during a login, 503 otherwise', () => {
    const upstream = new AtProtoUpstreamError('down');
    expect(toHttpException(upstream, 'login')?.getStatus()).toBe(502);
    expect(toHttpException(upstream, 'session')?.getStatus()).toBe(503);
  });

  it('ends on a cyclic cause chain', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(findMappedError(a, 'session')).toBeUndefined();
  });
});

describe('toHttpException: service-auth and bot errors that escape a handler', () => {
  it('answers a refusal the user can change (scope, privileged method) with 403 and its reason', () => {
    for (const reason of ['scope-not-granted', 'privileged-method'] as const) {
      const exception = toHttpException(new AtProtoServiceAuthError(reason, 'no'), 'session');
      expect(exception?.getStatus()).toBe(403);
      expect(exception?.getResponse()).toMatchObject({ reason });
    }
  });

  it("answers the PDS's other refusals with 502 and leaves the app's own mistakes alone (500)", () => {
    expect(
      toHttpException(new AtProtoServiceAuthError('refused', 'no'), 'session')?.getStatus(),
    ).toBe(502);
    for (const reason of ['invalid-request', 'protected-method', 'expiration-too-far'] as const) {
      expect(toHttpException(new AtProtoServiceAuthError(reason, 'no'), 'session')).toBeUndefined();
    }
  });

  it("answers a bot session that cannot be used with 503, and the app's own mistake alone", () => {
    for (const reason of [
      'not-logged-in',
      'expired',
      'rate-limited',
      'account-takedown',
    ] as const) {
      const exception = toHttpException(new AtProtoBotSessionError(reason, 'no'), 'session');
      expect(exception?.getStatus()).toBe(503);
      expect(JSON.stringify(exception?.getResponse())).not.toContain('did:');
    }
    expect(
      toHttpException(new AtProtoBotSessionError('invalid-request', 'no'), 'session'),
    ).toBeUndefined();
  });
});
