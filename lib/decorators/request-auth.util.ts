import type { ExecutionContext } from '@nestjs/common';
import { AT_PROTO_REQUEST_KEY } from '../at-proto.constants.js';
import { AtProtoError } from '../errors/at-proto.error.js';
import { AT_PROTO_GUARD_SEEN, type AtProtoRequestAuth } from '../guards/at-proto-request-auth.js';

/**
 * The authentication the guard attached, `undefined` on a public route without a user.
 * @throws AtProtoError when the guard never ran (a wiring mistake, not a 401)
 * @internal
 */
export function requestAuth(
  ctx: ExecutionContext,
  decorator: string,
): AtProtoRequestAuth | undefined {
  const req = ctx.switchToHttp().getRequest<Record<string | symbol, unknown>>();
  const auth = req[AT_PROTO_REQUEST_KEY] as AtProtoRequestAuth | undefined;
  if (!auth && !req[AT_PROTO_GUARD_SEEN as unknown as string]) {
    throw new AtProtoError(
      'ERR_AT_PROTO_GUARD_MISSING',
      `@${decorator}() needs AtProtoAuthGuard on this route: keep the module's global guard ` +
        `(globalGuard: true) or add @UseGuards(AtProtoAuthGuard).`,
    );
  }
  return auth;
}
