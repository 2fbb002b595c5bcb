import { AtProtoError } from './at-proto.error.js';

/**
 * Why an inbound service-auth token was refused, as the JSON `error` of the answer (the
 * names `@atproto/xrpc-server` uses where it has one), stable across versions:
 * - `AuthMissing`: no `Authorization: Bearer <token>`;
 * - `BadJwt`: not a JWT (garbage, oversized, unreadable header or claims, a claim of the
 *   wrong type, no `jti` on a single-use route);
 * - `BadJwtType`: `typ` says a user token (`at+jwt`, `refresh+jwt`, `dpop+jwt`);
 * - `BadJwtAlgorithm`: `alg` is not ES256K or ES256 (`none` included);
 * - `BadJwtIssuer`: `iss` is not a `did:plc` or `did:web` (a `did:key` would vouch for
 *   itself), cannot be resolved, or its DID document has no key for it;
 * - `BadJwtAudience`: `aud` is not one of `serviceAuth.serviceDid(s)`;
 * - `BadJwtLexiconMethod`: `lxm` is not the route's method, or missing where required;
 * - `JwtExpired`: `exp` has passed;
 * - `BadJwtExpiration`: `exp` is further ahead than `serviceAuth.maxAge`;
 * - `BadJwtIssuedAt`: `iat` is in the future beyond `serviceAuth.clockSkew`;
 * - `BadJwtSignature`: the signature is not the issuer's current key's;
 * - `JwtReplayed`: a single-use route has already accepted this token (`jti`);
 * - `IssuerUnavailable` (503): the issuer's DID document cannot be fetched right now;
 * - `ReplayStoreUnavailable` (503): the replay store (Redis) cannot be reached.
 * @publicApi
 */
export type AtProtoServiceJwtErrorName =
  | 'AuthMissing'
  | 'BadJwt'
  | 'BadJwtType'
  | 'BadJwtAlgorithm'
  | 'BadJwtIssuer'
  | 'BadJwtAudience'
  | 'BadJwtLexiconMethod'
  | 'JwtExpired'
  | 'BadJwtExpiration'
  | 'BadJwtIssuedAt'
  | 'BadJwtSignature'
  | 'JwtReplayed'
  | 'IssuerUnavailable'
  | 'ReplayStoreUnavailable';

/**
 * An inbound service-auth token refused by `@AtProtoServiceAuth()` (or
 * `AtProtoServiceJwtVerifier.verify`). `error` names the rule; `status` is the HTTP answer:
 * 401, or 503 when the issuer's DID document or the replay store cannot be reached right
 * now. The message never contains the token.
 * @publicApi
 */
export class AtProtoServiceJwtError extends AtProtoError {
  /** The rule that refused the token: the JSON `error` of the answer. */
  readonly error: AtProtoServiceJwtErrorName;
  /** 401, or 503 for `IssuerUnavailable` and `ReplayStoreUnavailable`. */
  readonly status: 401 | 503;

  constructor(error: AtProtoServiceJwtErrorName, message: string, options?: { cause?: unknown }) {
    super('ERR_AT_PROTO_SERVICE_JWT', message, options);
    this.error = error;
    this.status = error === 'IssuerUnavailable' || error === 'ReplayStoreUnavailable' ? 503 : 401;
  }
}
