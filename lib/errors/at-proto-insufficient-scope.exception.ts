import { ForbiddenException } from '@nestjs/common';

/**
 * The body of {@link AtProtoInsufficientScopeException}.
 * @publicApi
 */
export interface AtProtoInsufficientScopeBody {
  /** Always 403. */
  statusCode: 403;
  /** Stable code (RFC 6750 §3.1). */
  error: 'insufficient_scope';
  /** For people: what is missing and what to do. */
  message: string;
  /** The missing scopes, space-separated. */
  scope: string;
  /**
   * Where to send the browser to grant them: the module's login route for the same account
   * (`input=<did>`), asking for what the session has and the missing scopes
   * (`scope=…`), returning to `returnTo`. From a browser signed in here it is a step-up:
   * only the same account is accepted. A single-page app on another origin posts these
   * parameters as a form instead (the login route refuses cross-site navigations). A native
   * app adds its `redirect_uri` and `code_challenge`, opens it in the system browser, and
   * checks that the token response's `did` is the account it expected (a native login is
   * not bound to an account).
   */
  loginUrl: string;
}

/**
 * A route's `@AtProtoScope()` names a scope the user's OAuth session was not granted (the
 * user declined it, or signed in before the app asked for it): 403
 * `{ error: 'insufficient_scope', scope, loginUrl }`. Send the user to `loginUrl` (a step-up
 * login for the same account); on success the user's OAuth session is replaced by the wider
 * one, for every device of the user.
 * @publicApi
 */
export class AtProtoInsufficientScopeException extends ForbiddenException {
  /** The missing scopes, space-separated. */
  readonly scope: string;
  /** See {@link AtProtoInsufficientScopeBody.loginUrl}. */
  readonly loginUrl: string;

  /**
   * @param scope the missing scopes, space-separated
   * @param loginUrl see {@link AtProtoInsufficientScopeBody.loginUrl}
   */
  constructor(scope: string, loginUrl: string) {
    const body: AtProtoInsufficientScopeBody = {
      statusCode: 403,
      error: 'insufficient_scope',
      message: `This needs a permission you have not granted this app (${scope}). Sign in again to grant it.`,
      scope,
      loginUrl,
    };
    super(body);
    this.scope = scope;
    this.loginUrl = loginUrl;
  }
}
