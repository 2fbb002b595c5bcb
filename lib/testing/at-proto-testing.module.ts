import {
  type CanActivate,
  type DynamicModule,
  type ExecutionContext,
  Injectable,
  Module,
  UnauthorizedException,
} from '@nestjs/common';
import { APP_GUARD, Reflector } from '@nestjs/core';
import type { OAuthSession } from '@atproto/oauth-client-node';
import {
  AT_PROTO_OAUTH_SCOPES_KEY,
  AT_PROTO_PUBLIC_KEY,
  AT_PROTO_REQUEST_KEY,
} from '../at-proto.constants.js';
import { AtProtoInsufficientScopeException } from '../errors/at-proto-insufficient-scope.exception.js';
import { missingScopes, type RequiredScope, splitScope } from '../scopes/oauth-scopes.js';
import { AT_PROTO_GUARD_SEEN, type AtProtoRequestAuth } from '../guards/at-proto-request-auth.js';

/**
 * Options of {@link AtProtoTestingModule.forRoot} and {@link AtProtoTestingGuard}.
 * @publicApi
 */
export interface AtProtoTestingOptions {
  /** The signed-in user's DID, or `null` for an anonymous request. @default 'did:plc:testtesttesttesttesttest' */
  did?: string | null;
  /**
   * The OAuth session `@AtProtoSession()` injects. Default: {@link createFakeOAuthSession}
   * for `did`, whose `fetchHandler` you can give here instead.
   */
  session?: OAuthSession;
  /** Answers the fake session's XRPC calls (`new Agent(session)` goes through it). */
  fetchHandler?: (pathname: string, init?: RequestInit) => Promise<Response>;
  /**
   * The scope the fake session was granted, against which `@AtProtoScope()` routes are
   * checked as `AtProtoAuthGuard` checks them (a missing scope is the same 403, with a
   * `loginUrl` of `/oauth/login?…`). Also what the fake session's `getTokenInfo()` says.
   * @default 'atproto transition:generic'
   */
  scope?: string;
}

const DEFAULT_DID = 'did:plc:testtesttesttesttesttest';
const DEFAULT_SCOPE = 'atproto transition:generic';

/**
 * A stand-in for the `OAuthSession` of `@atproto/oauth-client-node`, for tests: it has
 * `did`/`sub`, forwards `fetchHandler` calls to yours, and `signOut()` does nothing. Works
 * with `new Agent(session)` from `@atproto/api`.
 * @publicApi
 */
export function createFakeOAuthSession(
  did: string,
  fetchHandler?: (pathname: string, init?: RequestInit) => Promise<Response>,
  scope = DEFAULT_SCOPE,
): OAuthSession {
  const handler =
    fetchHandler ??
    (async (pathname: string) =>
      Response.json(
        {
          error: 'NotImplemented',
          message: `The fake OAuth session has no fetchHandler for ${pathname}: pass one to AtProtoTestingModule.forRoot({ fetchHandler }).`,
        },
        { status: 501 },
      ));
  const fake = {
    did,
    sub: did,
    serverMetadata: { issuer: 'https://fake-pds.invalid' },
    fetchHandler: (pathname: string, init?: RequestInit) => handler(pathname, init),
    signOut: async () => undefined,
    getTokenInfo: async () => ({
      iss: 'https://fake-pds.invalid',
      sub: did,
      aud: 'https://fake-pds.invalid',
      scope,
      expiresAt: new Date(Date.now() + 3_600_000),
      expired: false,
    }),
  };
  return fake as unknown as OAuthSession;
}

/**
 * A guard that signs every request in as a fixed DID with a fake OAuth session, so that
 * controllers using `@AtProtoDid()` / `@AtProtoSession()` run without a PDS or a database.
 * `@Public()` is honoured; with `did: null` non-public routes answer 401.
 *
 * For controllers that use `@UseGuards(AtProtoAuthGuard)`:
 * `Test.createTestingModule(...).overrideGuard(AtProtoAuthGuard).useValue(new AtProtoTestingGuard(new Reflector(), { did }))`.
 * @publicApi
 */
@Injectable()
export class AtProtoTestingGuard implements CanActivate {
  readonly #did: string | null;
  readonly #session: OAuthSession | undefined;
  readonly #scope: string;

  constructor(
    private readonly reflector: Reflector,
    options: AtProtoTestingOptions = {},
  ) {
    this.#did = options.did === undefined ? DEFAULT_DID : options.did;
    this.#scope = options.scope ?? DEFAULT_SCOPE;
    this.#session =
      options.session ??
      (this.#did
        ? createFakeOAuthSession(this.#did, options.fetchHandler, this.#scope)
        : undefined);
  }

  canActivate(context: ExecutionContext): boolean {
    if (context.getType() !== 'http') return true;
    const req = context.switchToHttp().getRequest<Record<string, unknown>>();
    req[AT_PROTO_GUARD_SEEN as unknown as string] = true;
    const isPublic = this.reflector.getAllAndOverride<boolean | undefined>(AT_PROTO_PUBLIC_KEY, [
      context.getHandler(),
      context.getClass(),
    ]);
    if (!this.#did || !this.#session) {
      if (isPublic) return true;
      throw new UnauthorizedException('Sign in to continue.');
    }
    const required = [context.getHandler(), context.getClass()].flatMap(
      (t) => (Reflect.getMetadata(AT_PROTO_OAUTH_SCOPES_KEY, t) ?? []) as RequiredScope[],
    );
    const missing = missingScopes(this.#scope, required);
    if (missing.length > 0) {
      if (isPublic) return true;
      const scope = missing.map((m) => m.scope).join(' ');
      const query = new URLSearchParams({
        input: this.#did,
        scope: splitScope(`${this.#scope} ${scope}`).join(' '),
      });
      throw new AtProtoInsufficientScopeException(scope, `/oauth/login?${query}`);
    }
    const session = this.#session;
    const auth: AtProtoRequestAuth = {
      did: this.#did,
      credential: 'cookie',
      appSessionId: 'testing',
      restore: async () => session,
    };
    req[AT_PROTO_REQUEST_KEY] = auth;
    return true;
  }
}

/**
 * Replaces `AtProtoModule` in tests: registers {@link AtProtoTestingGuard} globally, so
 * every request is signed in as `did` with a fake OAuth session.
 *
 * @example
 * const moduleRef = await Test.createTestingModule({
 *   imports: [AtProtoTestingModule.forRoot({
 *     did: 'did:plc:alice',
 *     fetchHandler: async (path) => Response.json({ value: { displayName: 'Alice' } }),
 *   })],
 *   controllers: [ProfileController],
 * }).compile();
 * @publicApi
 */
@Module({})
export class AtProtoTestingModule {
  static forRoot(options: AtProtoTestingOptions = {}): DynamicModule {
    return {
      module: AtProtoTestingModule,
      providers: [
        {
          provide: APP_GUARD,
          inject: [Reflector],
          useFactory: (reflector: Reflector) => new AtProtoTestingGuard(reflector, options),
        },
      ],
    };
  }
}
