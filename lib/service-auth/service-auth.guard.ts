import {
  type CanActivate,
  type ExecutionContext,
  ForbiddenException,
  HttpException,
  Injectable,
} from '@nestjs/common';
import { ModuleRef, Reflector } from '@nestjs/core';
import { AtProtoError } from '../errors/at-proto.error.js';
import { AtProtoServiceJwtError } from '../errors/at-proto-service-jwt.error.js';
import {
  AT_PROTO_CALLER_KEY,
  AT_PROTO_SERVICE_AUTH_KEY,
  type ServiceAuthRoute,
} from './service-auth-route.js';
import { AtProtoServiceJwtVerifier } from './service-jwt-verifier.js';

interface RequestLike {
  headers: Record<string, string | string[] | undefined>;
  originalUrl?: string;
  url?: string;
  [key: symbol]: unknown;
}

interface ResponseLike {
  setHeader?(name: string, value: string): unknown;
  header?(name: string, value: string): unknown;
}

/**
 * The guard `@AtProtoServiceAuth()` puts on a route: verifies the inbound service-auth token
 * (see {@link AtProtoServiceJwtVerifier}) and attaches the caller for `@AtProtoCaller()`.
 * A refused token gets its status (401, or 503 when the issuer's DID document or the replay
 * store cannot be reached) with `{ error, message }` as XRPC services answer, and a 401 a
 * `WWW-Authenticate: Bearer` header.
 *
 * Its only dependencies are Nest's own (`Reflector`, `ModuleRef`), so a controller's module
 * need not import `AtProtoModule`: the verifier is found in the app.
 * @publicApi
 */
@Injectable()
export class AtProtoServiceAuthGuard implements CanActivate {
  #verifier: AtProtoServiceJwtVerifier | undefined;

  constructor(
    private readonly reflector: Reflector,
    private readonly moduleRef: ModuleRef,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (context.getType() !== 'http') {
      throw new ForbiddenException('@AtProtoServiceAuth() only authenticates HTTP requests.');
    }
    const route = this.reflector.getAllAndOverride<ServiceAuthRoute | undefined>(
      AT_PROTO_SERVICE_AUTH_KEY,
      [context.getHandler(), context.getClass()],
    );
    if (!route) {
      throw new AtProtoError(
        'ERR_AT_PROTO_GUARD_MISSING',
        'AtProtoServiceAuthGuard needs @AtProtoServiceAuth({ lxm }) on the route: use the decorator, not the guard alone.',
      );
    }
    const http = context.switchToHttp();
    const req = http.getRequest<RequestLike>();
    const header = req.headers.authorization;
    try {
      req[AT_PROTO_CALLER_KEY] = await this.#verify().verifyChecked(
        typeof header === 'string' ? header : undefined,
        route,
        req.originalUrl ?? req.url,
      );
      return true;
    } catch (error) {
      if (!(error instanceof AtProtoServiceJwtError)) throw error;
      if (error.status === 401) {
        const res = http.getResponse<ResponseLike>();
        // RFC 6750 §3.1: no error code when the request carried no token at all.
        const value = error.error === 'AuthMissing' ? 'Bearer' : 'Bearer error="invalid_token"';
        if (res.setHeader) res.setHeader('WWW-Authenticate', value);
        else res.header?.('WWW-Authenticate', value);
      }
      throw new HttpException({ error: error.error, message: error.message }, error.status, {
        cause: error,
      });
    }
  }

  #verify(): AtProtoServiceJwtVerifier {
    if (this.#verifier) return this.#verifier;
    const verifier: AtProtoServiceJwtVerifier = this.moduleRef.get(AtProtoServiceJwtVerifier, {
      strict: false,
    });
    this.#verifier = verifier;
    return verifier;
  }
}
