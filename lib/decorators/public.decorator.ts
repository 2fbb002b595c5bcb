import { SetMetadata } from '@nestjs/common';
import { AT_PROTO_PUBLIC_KEY } from '../at-proto.constants.js';

/**
 * Lets a route (or every route of a controller) through `AtProtoAuthGuard` without a
 * signed-in user. If the request carries a valid session, `@AtProtoDid()` still gets it.
 * @example \@Public() \@Get('health') health() { return { ok: true }; }
 * @publicApi
 */
export const Public = (): MethodDecorator & ClassDecorator =>
  SetMetadata(AT_PROTO_PUBLIC_KEY, true);
