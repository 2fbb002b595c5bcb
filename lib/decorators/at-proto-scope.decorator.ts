import { AT_PROTO_OAUTH_SCOPES_KEY } from '../at-proto.constants.js';
import { parseRequiredScope, type RequiredScope } from '../scopes/oauth-scopes.js';

/**
 * The OAuth scopes a route (or every route of a controller) needs the user to have granted,
 * checked by `AtProtoAuthGuard` against the user's OAuth session after its credential: a
 * cookie, an access token or an API key acts with its DID's OAuth session, so all three are
 * checked the same way. Without one of them the request gets a 403
 * `{ error: 'insufficient_scope', scope, loginUrl }` ({@link AtProtoInsufficientScopeException}),
 * and bearer requests also a `WWW-Authenticate: Bearer error="insufficient_scope"` header;
 * `loginUrl` signs the same account in again asking for the missing scope on top of what it
 * has (a step-up), then returns to the page.
 *
 * Scopes are checked as the PDS checks them (`@atproto/oauth-scopes`, with
 * `transition:generic` granting repo, blob and non-chat rpc permissions). Every scope named
 * here must be one a login can ask for: declared in the module's `optionalScopes` (or
 * covered by its `scope`), or the app fails to boot. Several scopes, several decorators, or
 * one on the controller and one on a method: all are required. A permission set
 * (`include:…`) cannot be named here: the authorization server expands it when it grants it,
 * so name the concrete scopes the route uses.
 *
 * On a `@Public()` route a request whose session lacks a scope proceeds without the user's
 * identity, as with any other credential a public route does not accept.
 * @example
 * \@AtProtoScope('repo:app.bsky.feed.post?action=create')
 * \@Post('posts') post(\@AtProtoSession() session: OAuthSession) { … }
 * @publicApi
 */
export function AtProtoScope(...scopes: string[]): MethodDecorator & ClassDecorator {
  if (scopes.length === 0) {
    throw new TypeError(
      "@AtProtoScope(): name at least one scope, such as 'repo:app.bsky.feed.post?action=create'.",
    );
  }
  // Checked where it is written: a mistake is a programming error, reported when the class
  // is defined, not on the first request.
  const parsed = scopes.map((s) => parseRequiredScope(s, '@AtProtoScope()'));
  return ((target: object, _key?: string | symbol, descriptor?: PropertyDescriptor) => {
    const on = (descriptor ? descriptor.value : target) as object;
    const existing = (Reflect.getMetadata(AT_PROTO_OAUTH_SCOPES_KEY, on) ?? []) as RequiredScope[];
    Reflect.defineMetadata(AT_PROTO_OAUTH_SCOPES_KEY, [...existing, ...parsed], on);
    return descriptor;
  }) as MethodDecorator & ClassDecorator;
}
