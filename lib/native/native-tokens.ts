import { webcrypto } from 'node:crypto';
import { jwtVerify, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import type { ResolvedNativeOptions } from './native-options.js';

/** Header `typ` of access tokens (RFC 9068). @internal */
export const ACCESS_TOKEN_TYPE = 'at+jwt';
/** Header `typ` of refresh tokens. @internal */
export const REFRESH_TOKEN_TYPE = 'refresh+jwt';
/**
 * Longest token string looked at. The module's tokens are about 400 characters; anything
 * much longer is refused before it is hashed, decoded or verified.
 * @internal
 */
export const MAX_TOKEN_LENGTH = 4096;
/** Three base64url segments: the only shape a compact JWS has. @internal */
export const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
/** Clock skew tolerated between instances, in seconds (for `exp`, `nbf` and `iat`). */
const CLOCK_TOLERANCE_S = 5;
const SESSION_ID = /^[0-9a-f]{64}$/;
const JTI = /^[A-Za-z0-9_-]{16,64}$/;
const DID = /^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$/;

/** The claims of a verified token of this module. @internal */
export interface NativeTokenClaims {
  did: string;
  /** The app session's id (`sid`). */
  sid: string;
  jti: string;
  /** `exp`, in epoch milliseconds. */
  expiresAt: number;
}

/**
 * Signs and verifies the module's access and refresh tokens with `jose` (HS256). Both
 * carry `kid` in their header, `iss` and `aud` = `publicUrl`, `sub` (DID), `sid` (app
 * session id), `jti`, `iat` and `exp`; they differ by their header `typ`, which
 * verification pins, so that neither is accepted as the other.
 * @internal
 */
export class NativeTokens {
  readonly #options: ResolvedNativeOptions;
  readonly #issuer: string;
  /** HMAC keys imported once per kid (importing costs more than the HMAC itself). */
  readonly #keys = new Map<string, Promise<CryptoKey>>();

  constructor(options: ResolvedNativeOptions, issuer: string) {
    this.#options = options;
    this.#issuer = issuer;
  }

  /** A signed access token; `iat` and `exp` are epoch seconds. */
  signAccess(claims: { did: string; sid: string; jti: string; iat: number; exp: number }) {
    return this.#sign(ACCESS_TOKEN_TYPE, claims);
  }

  /**
   * A signed refresh token. Signing is deterministic (HS256 over the same header and
   * claims in the same order), so the same jti, `iat` and `exp` give the same string: the
   * rotation grace hands back exactly the successor it handed out before.
   */
  signRefresh(claims: { did: string; sid: string; jti: string; iat: number; exp: number }) {
    return this.#sign(REFRESH_TOKEN_TYPE, claims);
  }

  /**
   * The claims of a valid access token, or `undefined`. Pins the algorithm (HS256), the
   * header `typ`, the issuer and the audience; requires every claim; refuses an `iat` in the
   * future or older than `maxAgeS`. Never throws.
   */
  verifyAccess(token: unknown, maxAgeS: number): Promise<NativeTokenClaims | undefined> {
    return this.#verify(token, ACCESS_TOKEN_TYPE, maxAgeS);
  }

  /** The claims of a valid refresh token, or `undefined`, checked like an access token. */
  verifyRefresh(token: unknown, maxAgeS: number): Promise<NativeTokenClaims | undefined> {
    return this.#verify(token, REFRESH_TOKEN_TYPE, maxAgeS);
  }

  async #sign(
    typ: string,
    c: { did: string; sid: string; jti: string; iat: number; exp: number },
  ): Promise<string> {
    const kid = this.#options.activeKid;
    return new SignJWT({ sid: c.sid })
      .setProtectedHeader({ alg: 'HS256', typ, kid })
      .setIssuer(this.#issuer)
      .setAudience(this.#issuer)
      .setSubject(c.did)
      .setJti(c.jti)
      .setIssuedAt(c.iat)
      .setExpirationTime(c.exp)
      .sign(await this.#key(kid));
  }

  async #verify(
    token: unknown,
    typ: string,
    maxAgeS: number,
  ): Promise<NativeTokenClaims | undefined> {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH || !JWT_SHAPE.test(token)) {
      return undefined;
    }
    try {
      const { payload } = await jwtVerify(
        token,
        async (header) => {
          const kid = header.kid;
          if (typeof kid !== 'string' || !this.#options.secrets.has(kid)) {
            throw new TypeError('unknown kid');
          }
          return this.#key(kid);
        },
        {
          algorithms: ['HS256'],
          typ,
          issuer: this.#issuer,
          audience: this.#issuer,
          requiredClaims: ['sub', 'jti', 'iat', 'exp', 'sid'],
          maxTokenAge: maxAgeS,
          clockTolerance: CLOCK_TOLERANCE_S,
        },
      );
      return claimsOf(payload);
    } catch {
      // Whatever is wrong with the token (shape, signature, claims, kid), the answer is the
      // same: not a valid token. Nothing of it is logged.
      return undefined;
    }
  }

  #key(kid: string): Promise<CryptoKey> {
    let key = this.#keys.get(kid);
    if (!key) {
      const secret = this.#options.secrets.get(kid);
      if (!secret) return Promise.reject(new TypeError('unknown kid'));
      key = webcrypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' }, false, [
        'sign',
        'verify',
      ]);
      this.#keys.set(kid, key);
    }
    return key;
  }
}

function claimsOf(payload: JWTPayload): NativeTokenClaims | undefined {
  const { sub, sid, jti, exp } = payload;
  if (
    typeof sub !== 'string' ||
    sub.length > 512 ||
    !DID.test(sub) ||
    typeof sid !== 'string' ||
    !SESSION_ID.test(sid) ||
    typeof jti !== 'string' ||
    !JTI.test(jti) ||
    typeof exp !== 'number'
  ) {
    return undefined;
  }
  return { did: sub, sid, jti, expiresAt: exp * 1000 };
}
