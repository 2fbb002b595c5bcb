import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { AtProtoError } from '../errors/at-proto.error.js';
import { AT_PROTO_CALLER_KEY } from '../service-auth/service-auth-route.js';
import type { AtProtoServiceCaller } from '../service-auth/service-jwt-verifier.js';

/**
 * Injects the service that called an `@AtProtoServiceAuth()` route, as its verified token
 * says: `{ did, serviceId?, aud, lxm }` (`serviceId` when `iss` was `did#serviceId`).
 * @example skeleton(\@AtProtoCaller() caller: AtProtoServiceCaller) { caller.did }
 * @throws AtProtoError (`ERR_AT_PROTO_GUARD_MISSING`) on a route without
 * `@AtProtoServiceAuth()`: a wiring mistake, not a 401
 * @publicApi
 */
export const AtProtoCaller = createParamDecorator(
  (_: unknown, ctx: ExecutionContext): AtProtoServiceCaller => {
    const req = ctx.switchToHttp().getRequest<Record<symbol, unknown>>();
    const caller = req[AT_PROTO_CALLER_KEY] as AtProtoServiceCaller | undefined;
    if (!caller) {
      throw new AtProtoError(
        'ERR_AT_PROTO_GUARD_MISSING',
        '@AtProtoCaller() needs @AtProtoServiceAuth({ lxm }) on this route.',
      );
    }
    return caller;
  },
);
