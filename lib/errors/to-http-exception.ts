import {
  BadGatewayException,
  BadRequestException,
  ForbiddenException,
  HttpException,
  ServiceUnavailableException,
  UnauthorizedException,
} from '@nestjs/common';
import {
  TokenInvalidError,
  TokenRefreshError,
  TokenRevokedError,
} from '@atproto/oauth-client-node';
import { AtProtoError } from './at-proto.error.js';
import { AtProtoBadRequestError, AtProtoSessionUnavailableError } from './at-proto-http.errors.js';
import type { AtProtoBotSessionError } from './at-proto-bot-session.error.js';
import type { AtProtoServiceAuthError } from './at-proto-service-auth.error.js';

/**
 * Whether an error means the user's OAuth session has ended for good (revoked, refresh
 * refused, deleted): the user must log in again. Use it around your own XRPC calls.
 * @publicApi
 */
export function isSessionEndedError(error: unknown): boolean {
  return (
    error instanceof AtProtoSessionUnavailableError ||
    error instanceof TokenRefreshError ||
    error instanceof TokenRevokedError ||
    error instanceof TokenInvalidError
  );
}

/**
 * The DID whose OAuth session an error says has ended, when it says.
 * @internal
 */
export function endedSessionDid(error: unknown): string | undefined {
  if (error instanceof AtProtoSessionUnavailableError) return error.did;
  if (
    error instanceof TokenRefreshError ||
    error instanceof TokenRevokedError ||
    error instanceof TokenInvalidError
  ) {
    return error.sub;
  }
  return undefined;
}

/**
 * An error and what it wraps: its `cause` chain and, for an `AggregateError` (what the OAuth
 * client throws when it fails to store a session), every error it aggregates. Bounded in
 * depth and in the number of errors visited, each visited once, so that a cyclic or
 * self-multiplying structure ends at once (the exception filter walks every thrown error).
 * @internal
 */
export function* causeChain(error: unknown): Generator<unknown> {
  const seen = new Set<unknown>();
  let budget = 64;
  function* walk(e: unknown, depth: number): Generator<unknown> {
    if (e === undefined || e === null || depth > 6 || seen.has(e) || budget-- <= 0) return;
    seen.add(e);
    yield e;
    if (e instanceof AggregateError) {
      for (const inner of e.errors) yield* walk(inner, depth + 1);
    }
    yield* walk((e as { cause?: unknown }).cause, depth + 1);
  }
  yield* walk(error, 0);
}

/**
 * The first error in `error`'s chain that the module maps to an HTTP answer (one of its own,
 * or the OAuth client's "session ended" errors), with that answer. Libraries wrap what they
 * call: an `Agent` from `@atproto/api` turns every error of `session.fetchHandler()` into an
 * `XRPCError` whose `cause` is the module's.
 * @internal
 */
export function findMappedError(
  error: unknown,
  phase: AtProtoHttpPhase,
): { error: unknown; exception: HttpException } | undefined {
  for (const inner of causeChain(error)) {
    // An HTTP exception already says what to answer (the app's own, or the module's routes'
    // own mapping): what it wraps is not looked at again.
    if (inner instanceof HttpException) return undefined;
    const exception = toHttpException(inner, phase);
    if (exception) return { error: inner, exception };
  }
  return undefined;
}

/**
 * A service-auth token refused by the user's PDS: 403 when the user's grant or app password
 * does not allow the method (the user can change that), 502 for the PDS's other refusals;
 * the app's own mistakes (bad arguments, a protected method, an expiry out of range) are
 * left alone (500).
 */
function serviceAuthException(error: AtProtoServiceAuthError): HttpException | undefined {
  switch (error.reason) {
    case 'scope-not-granted':
    case 'privileged-method':
      return new ForbiddenException(
        { statusCode: 403, error: 'Forbidden', message: error.message, reason: error.reason },
        { cause: error },
      );
    case 'refused':
      return new BadGatewayException(error.message, { cause: error });
    default:
      return undefined;
  }
}

/** The texts users see; one place, so that every route says the same thing. @internal */
export const AT_PROTO_MESSAGES = {
  signIn: 'Sign in to continue.',
  crossSite: 'Cross-site request refused.',
  sessionEnded: 'The AT Protocol session has ended. Log in again.',
  sessionUnusable: 'The AT Protocol session could not be used right now. Try again.',
  botUnavailable: "The app's AT Protocol account cannot act right now. Try again later.",
  storageUnavailable:
    'Sessions cannot be read or stored right now (database or Redis unavailable). Nothing was changed; try again in a moment.',
} as const;

/**
 * Where an error happened, which decides what an unreachable AT Protocol server means to
 * the client: during a login (`login`: starting it or completing the callback) the user's
 * authorization server did not answer, a 502 (Bad Gateway); while using a session
 * (`session`: a restore, a refresh, a PDS call) the session is temporarily unusable, a 503.
 * @internal
 */
export type AtProtoHttpPhase = 'login' | 'session';

/**
 * The one mapping from the module's errors to HTTP answers (routes, guard, the
 * `@AtProtoSession()` pipe and the exception filter all use it). Bodies never carry
 * internals: a store or lock failure says "try again", never which query failed.
 * - bad input, forged or replayed state: 400;
 * - the OAuth session has ended: 401;
 * - the module's storage or lock unavailable (`ERR_AT_PROTO_STORE`, `ERR_AT_PROTO_LOCK`,
 *   `ERR_AT_PROTO_UNAVAILABLE`, `ERR_AT_PROTO_DECRYPT`, `ERR_AT_PROTO_KEY_RING_UNAVAILABLE`): 503;
 * - an AT Protocol server unreachable (`ERR_AT_PROTO_UPSTREAM`): 502 during a login, 503 otherwise.
 * Anything else is not the module's to map: `undefined`.
 * @internal
 */
export function toHttpException(
  error: unknown,
  phase: AtProtoHttpPhase,
): HttpException | undefined {
  if (error instanceof HttpException) return error;
  if (error instanceof AtProtoBadRequestError) {
    return new BadRequestException(error.message, { cause: error });
  }
  if (isSessionEndedError(error)) {
    return new UnauthorizedException(AT_PROTO_MESSAGES.sessionEnded, { cause: error });
  }
  if (!(error instanceof AtProtoError)) return undefined;
  switch (error.code) {
    case 'ERR_AT_PROTO_STORE':
    case 'ERR_AT_PROTO_UNAVAILABLE':
    case 'ERR_AT_PROTO_DECRYPT':
    case 'ERR_AT_PROTO_KEY_RING_UNAVAILABLE':
      return new ServiceUnavailableException(AT_PROTO_MESSAGES.storageUnavailable, {
        cause: error,
      });
    case 'ERR_AT_PROTO_LOCK':
      // Lock messages are written for users ("…stayed busy… try again").
      return new ServiceUnavailableException(error.message, { cause: error });
    case 'ERR_AT_PROTO_TOKEN':
      // A native app's token or revocation request refused: RFC 6749 §5.2's body.
      return new BadRequestException(
        (error as AtProtoError & { toJSON(): Record<string, string> }).toJSON(),
        { cause: error },
      );
    case 'ERR_AT_PROTO_UPSTREAM':
      return phase === 'login'
        ? new BadGatewayException(error.message, { cause: error })
        : new ServiceUnavailableException(error.message, { cause: error });
    case 'ERR_AT_PROTO_SERVICE_AUTH':
      return serviceAuthException(error as AtProtoServiceAuthError);
    case 'ERR_AT_PROTO_BOT_SESSION':
      // The app's own account cannot act right now: not the caller's fault, and nothing the
      // caller can change. A malformed login call is the app's mistake: left alone (500).
      return (error as AtProtoBotSessionError).reason === 'invalid-request'
        ? undefined
        : new ServiceUnavailableException(AT_PROTO_MESSAGES.botUnavailable, { cause: error });
    default:
      return undefined;
  }
}
