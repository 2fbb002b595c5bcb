import { SERVICE_DID } from './service-auth-options.js';

/**
 * What `@AtProtoServiceAuth()` asks of the inbound token of a route.
 * @publicApi
 */
export interface AtProtoServiceAuthRouteOptions {
  /**
   * The method (NSID) a token must be for, e.g. `app.bsky.feed.getFeedSkeleton`; or
   * `'route'`: the NSID the request's path names (`…/xrpc/<nsid>`), for a route that serves
   * several methods.
   */
  lxm: string;
  /**
   * Also accept tokens without `lxm` (good for any method of this service), and with an
   * `exp` at most 60 s ahead, as a PDS issues them. Avoid it for anything sensitive.
   * @default false
   */
  allowMethodless?: boolean;
  /**
   * Accept each token once (by its `jti`): a second request with it gets `JwtReplayed`,
   * on every instance when the replay store is Redis. Off by default, because a client may
   * legitimately reuse a token until it expires (`AtProtoServiceAuthService` caches them).
   * @default false
   */
  singleUse?: boolean;
  /**
   * The audiences this route accepts instead of `serviceAuth.serviceDid(s)`: a DID (a bare
   * DID also accepts its `#service` forms) or a `did#service`, or several.
   */
  aud?: string | readonly string[];
}

/** The route's options, checked when the decorator is applied. @internal */
export interface ServiceAuthRoute {
  /** An NSID, or `null` for `'route'` (read from the request's path). */
  readonly lxm: string | null;
  readonly allowMethodless: boolean;
  readonly singleUse: boolean;
  /** Audiences of the route, or `undefined` for the module's `serviceAuth.serviceDid(s)`. */
  readonly aud: readonly string[] | undefined;
}

/** NSID syntax (atproto spec): reversed domain authority, then a name. @internal */
export const NSID =
  /^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\.[A-Za-z][A-Za-z0-9]{0,62}$/;

/**
 * Checks the options of `@AtProtoServiceAuth()` where it is written: a mistake there is a
 * programming error, reported when the class is defined.
 * @internal
 */
export function checkServiceAuthRoute(options: AtProtoServiceAuthRouteOptions): ServiceAuthRoute {
  const { lxm, allowMethodless, singleUse, aud } = (options ??
    {}) as Partial<AtProtoServiceAuthRouteOptions>;
  const problems: string[] = [];
  if (lxm !== 'route' && (typeof lxm !== 'string' || lxm.length > 317 || !NSID.test(lxm))) {
    problems.push("lxm must be an NSID such as app.bsky.feed.getFeedSkeleton, or 'route'");
  }
  if (allowMethodless !== undefined && typeof allowMethodless !== 'boolean') {
    problems.push('allowMethodless must be true or false');
  }
  if (singleUse !== undefined && typeof singleUse !== 'boolean') {
    problems.push('singleUse must be true or false');
  }
  const audiences = aud === undefined ? undefined : typeof aud === 'string' ? [aud] : aud;
  if (
    audiences !== undefined &&
    (!Array.isArray(audiences) ||
      audiences.length === 0 ||
      !audiences.every((a) => typeof a === 'string' && a.length <= 2048 && SERVICE_DID.test(a)))
  ) {
    problems.push(
      'aud must be a DID (optionally with a #service fragment), or a non-empty array of them',
    );
  }
  if (problems.length > 0) {
    throw new TypeError(`@AtProtoServiceAuth(): ${problems.join('; ')}.`);
  }
  return {
    lxm: lxm === 'route' ? null : (lxm as string),
    allowMethodless: allowMethodless ?? false,
    singleUse: singleUse ?? false,
    aud: audiences === undefined ? undefined : [...audiences],
  };
}

/** @internal Metadata key set by `@AtProtoServiceAuth()`. */
export const AT_PROTO_SERVICE_AUTH_KEY = 'atproto:service-auth';
/** @internal Property of the request where the service-auth guard puts the caller. */
export const AT_PROTO_CALLER_KEY = Symbol.for('nestjs-atproto-auth.service-caller');
