import { SetMetadata } from '@nestjs/common';
import { AT_PROTO_CREDENTIALS_KEY } from '../at-proto.constants.js';
import type { AtProtoCredentialKind } from '../credentials/credentials.js';

/**
 * What `@AtProtoCredentials()` says about a route.
 * @publicApi
 */
export interface AtProtoCredentialsOptions {
  /** The credentials the route accepts (instead of the module's `credentials.allow`). */
  allow: readonly AtProtoCredentialKind[];
  /** Scopes an API key needs for this route (a key created without scopes has them all). */
  scopes?: readonly string[];
}

/**
 * Which credentials a route (or every route of a controller) accepts, instead of the
 * module's `credentials.allow` (cookies and bearer access tokens by default): API keys reach
 * only routes that list `'api-key'`, and, with `scopes`, only keys that have them. A request
 * with a credential the route does not accept gets a 403 saying so. On a method it replaces
 * its controller's decorator entirely (`allow` and `scopes`), like other Nest route metadata:
 * repeat the scopes a method still requires.
 * @example \@AtProtoCredentials({ allow: ['cookie', 'bearer', 'api-key'] }) \@Get('feed') feed() {}
 * @publicApi
 */
export const AtProtoCredentials = (
  options: AtProtoCredentialsOptions,
): MethodDecorator & ClassDecorator =>
  SetMetadata(AT_PROTO_CREDENTIALS_KEY, {
    allow: [...options.allow],
    scopes: [...(options.scopes ?? [])],
  } satisfies AtProtoCredentialsOptions);
