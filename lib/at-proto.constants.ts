/** Injection token of the validated {@link ResolvedAtProtoOptions}. @publicApi */
export const AT_PROTO_OPTIONS = Symbol('AT_PROTO_OPTIONS');
/** Injection token of the `NodeOAuthClient` the module built. @publicApi */
export const AT_PROTO_OAUTH_CLIENT = Symbol('AT_PROTO_OAUTH_CLIENT');
/** Injection token of the OAuth state store in use. @publicApi */
export const AT_PROTO_STATE_STORE = Symbol('AT_PROTO_STATE_STORE');
/** Injection token of the OAuth session store in use. @publicApi */
export const AT_PROTO_SESSION_STORE = Symbol('AT_PROTO_SESSION_STORE');
/** Injection token of the app session store in use. @publicApi */
export const AT_PROTO_APP_SESSION_STORE = Symbol('AT_PROTO_APP_SESSION_STORE');
/** @internal Static options given next to `useFactory` (route prefix, global guard). */
export const AT_PROTO_MODULE_EXTRAS = Symbol('AT_PROTO_MODULE_EXTRAS');
/** @internal Metadata key set by `@AtProtoCredentials()`. */
export const AT_PROTO_CREDENTIALS_KEY = 'atproto:credentials';
/** @internal Metadata key set by `@AtProtoScope()` (the parsed scopes, appended). */
export const AT_PROTO_OAUTH_SCOPES_KEY = 'atproto:oauth-scopes';
/** @internal Metadata key set by `@Public()`. */
export const AT_PROTO_PUBLIC_KEY = 'atproto:public';
/** @internal Property of the request object where the guard puts the authenticated user. */
export const AT_PROTO_REQUEST_KEY = 'atproto';
/** @internal The app's TypeORM DataSource (or null with `storage: 'memory'`). */
export const AT_PROTO_DATA_SOURCE = Symbol('AT_PROTO_DATA_SOURCE');
