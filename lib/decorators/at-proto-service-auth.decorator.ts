import { applyDecorators, SetMetadata, UseGuards } from '@nestjs/common';
import { AtProtoServiceAuthGuard } from '../service-auth/service-auth.guard.js';
import {
  AT_PROTO_SERVICE_AUTH_KEY,
  type AtProtoServiceAuthRouteOptions,
  checkServiceAuthRoute,
} from '../service-auth/service-auth-route.js';
import { Public } from './public.decorator.js';

/**
 * Lets a route (or every route of a controller) be called by other AT Protocol services
 * with a service-auth token (`Authorization: Bearer <jwt>`, signed with the calling
 * account's or service's key), instead of by a signed-in user: a feed generator's
 * `getFeedSkeleton`, a labeler's endpoint, your own service called through a user's PDS.
 * The token must be for this backend (`serviceAuth.serviceDid`, or `aud`) and for the
 * route's method (`lxm`); see `AtProtoServiceJwtVerifier` for every check, and
 * `@AtProtoCaller()` for who called.
 *
 * The route is `@Public()` for `AtProtoAuthGuard` (a service token is not a user
 * credential, and is never taken for one). Options are checked here: a mistake throws
 * when the class is defined.
 * @example
 * \@AtProtoServiceAuth({ lxm: 'app.bsky.feed.getFeedSkeleton' })
 * \@Get('xrpc/app.bsky.feed.getFeedSkeleton')
 * skeleton(\@AtProtoCaller() caller: AtProtoServiceCaller) { ... }
 * @publicApi
 */
export function AtProtoServiceAuth(
  options: AtProtoServiceAuthRouteOptions,
): MethodDecorator & ClassDecorator {
  const route = checkServiceAuthRoute(options);
  return applyDecorators(
    Public(),
    SetMetadata(AT_PROTO_SERVICE_AUTH_KEY, route),
    UseGuards(AtProtoServiceAuthGuard),
  );
}
