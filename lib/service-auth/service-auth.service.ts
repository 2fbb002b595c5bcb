import {
  Inject,
  Injectable,
  Logger,
  type OnModuleDestroy,
  type OnModuleInit,
  Optional,
} from '@nestjs/common';
import { AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { AT_PROTO_LOCK_CONNECTION } from '../at-proto.internal-constants.js';
import { AtProtoBotSessionService } from '../bots/bot-session.service.js';
import { AtProtoError } from '../errors/at-proto.error.js';
import {
  AtProtoSessionUnavailableError,
  AtProtoUpstreamError,
} from '../errors/at-proto-http.errors.js';
import { AtProtoServiceAuthError } from '../errors/at-proto-service-auth.error.js';
import { describeError } from '../errors/describe-error.js';
import { isSessionEndedError } from '../errors/to-http-exception.js';
import { AtProtoEvents } from '../events/at-proto-events.js';
import { AtProtoAuthService } from '../oauth/at-proto-auth.service.js';
import { createOutboundFetch, parsePrivateHost } from '../oauth/outbound-fetch.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import type { RedisScriptingClient } from '../storage/redis/redis-client.js';
import { RedisServiceTokenStore } from './redis-service-token-store.js';
import { serviceAuthRefusal } from './service-auth-refusal.js';
import {
  type AtProtoServiceAuthStats,
  type ServiceTokenKey,
  ServiceTokenCache,
} from './service-token-cache.js';

/**
 * What a service-auth token is for.
 * @publicApi
 */
export interface AtProtoServiceTokenRequest {
  /**
   * The service the token is for: its DID (`did:web:feed.example.com`), or a service of it
   * (`did:web:example.com#bsky_fg`).
   */
  aud: string;
  /**
   * The method (NSID) the token is for, e.g. `app.bsky.feed.getFeedSkeleton`. `null` asks for
   * a method-less token, good for any method of the audience: avoid it for anything
   * sensitive (PDSes limit such tokens to 60 s).
   */
  lxm: string | null;
  /**
   * Expiry asked of the PDS when a token has to be minted, in epoch **seconds**, at most 1 h
   * ahead (60 s for a method-less token). A cached token is handed out while it stays valid
   * beyond the margin, even if it ends before this. @default the PDS's (60 s ahead)
   */
  exp?: number;
}

/** Longest DID or audience accepted (the PDS's limit on `aud`). */
const MAX_DID = 2048;
const DID = /^did:[a-z]+:[A-Za-z0-9._:%-]*[A-Za-z0-9._-]$/;
const AUDIENCE = /^(did:[a-z]+:[A-Za-z0-9._:%-]*[A-Za-z0-9._-])(#[A-Za-z0-9._~:-]+)?$/;
/** NSID syntax (atproto spec): reversed domain authority, then a name. */
const NSID =
  /^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\.[A-Za-z][A-Za-z0-9]{0,62}$/;

/**
 * Service-auth tokens for calls to other AT Protocol services (a feed generator, a labeler,
 * the chat service, your own backend) on behalf of a signed-in user: JWTs the user's PDS
 * signs with the account's key (`com.atproto.server.getServiceAuth`, through the user's
 * OAuth session), for one audience (`aud`) and one method (`lxm`).
 *
 * Tokens are cached per (DID, audience, method) until their expiry minus
 * `serviceAuth.margin`, so that a busy route asks the PDS once a minute, not once per
 * request; concurrent callers of one key share one request to the PDS (in this process).
 * With `redis`, the cache is shared by every instance (encrypted with the key ring), though
 * instances that miss at the same moment may each mint one. See docs/service-auth.md.
 * @publicApi
 */
@Injectable()
export class AtProtoServiceAuthService implements OnModuleInit, OnModuleDestroy {
  readonly #logger = new Logger('AtProtoServiceAuth');
  readonly #cache: ServiceTokenCache;
  readonly #fetch: typeof globalThis.fetch;
  #sweep: ReturnType<typeof setInterval> | undefined;
  #ended: { unsubscribe(): void } | undefined;

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    private readonly auth: AtProtoAuthService,
    @Inject(AT_PROTO_LOCK_CONNECTION) redis: RedisScriptingClient | null,
    // Bot accounts (app-password sessions) get tokens too: see #session.
    @Optional() private readonly bots?: AtProtoBotSessionService,
    @Optional() private readonly events?: AtProtoEvents,
  ) {
    const { marginMs, fallbackTtlMs } = options.serviceAuth;
    this.#cache = new ServiceTokenCache({
      marginMs,
      fallbackTtlMs,
      shared: redis
        ? new RedisServiceTokenStore(redis, options.keyRing, options.redisKeyPrefix, this.#logger)
        : undefined,
      onUnreadableExpiry: (key) =>
        this.#logger.warn(
          `A service-auth token for ${key.aud} (${key.lxm ?? 'no method'}) has no readable expiry: ` +
            `cached for serviceAuth.fallbackTtl (${fallbackTtlMs} ms).`,
        ),
    });
    // The same guard as the OAuth client's requests: the URL given to fetchWithServiceAuth
    // may come from a DID document or from input, and must not reach into private networks.
    this.#fetch = createOutboundFetch({
      allowHttp: options.allowHttpServers,
      privateHosts: options.privateHosts.flatMap((entry) => parsePrivateHost(entry) ?? []),
      timeoutMs: options.httpTimeoutMs,
    });
  }

  /** @internal */
  onModuleInit(): void {
    this.#sweep = setInterval(() => this.#cache.sweep(), this.options.serviceAuth.sweepIntervalMs);
    // The sweep only frees memory: it must never keep the process alive.
    this.#sweep.unref();
    // A token minted through a session that has ended must not be handed out any more:
    // dropped here (and, with Redis, for every instance) when the session ends on this one.
    this.#ended = this.events?.events$.subscribe((event) => {
      if (event.type !== 'oauth-session-deleted' && event.type !== 'bot-session-ended') return;
      this.invalidate(event.did).catch((error: unknown) => {
        this.#logger.warn(
          `Could not drop the service-auth tokens of an ended session: ${describeError(error)}`,
        );
      });
    });
  }

  /** @internal */
  onModuleDestroy(): void {
    this.#ended?.unsubscribe();
    this.#ended = undefined;
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    this.#cache.clear();
  }

  /**
   * A service-auth token of `did` for `request.aud` and `request.lxm`: from the cache while
   * it stays valid beyond the margin, otherwise minted by the user's PDS through their OAuth
   * session (one request for every concurrent caller of the same key).
   * @example
   * const token = await serviceAuth.getToken(did, {
   *   aud: 'did:web:feed.example.com',
   *   lxm: 'app.bsky.feed.getFeedSkeleton',
   * });
   * @throws AtProtoServiceAuthError when the PDS refuses (or would refuse) these arguments:
   * see its `reason`; neither retried nor cached
   * @throws AtProtoSessionUnavailableError when the user's OAuth session has ended
   * @throws AtProtoUpstreamError when the PDS cannot be reached or answers unexpectedly
   */
  async getToken(did: string, request: AtProtoServiceTokenRequest): Promise<string> {
    return this.#token(did, request, false);
  }

  /**
   * `fetch(url, init)` with `Authorization: Bearer <service-auth token of did>`. When the
   * audience answers 401, the tokens of `did` for it are dropped from the cache, and the
   * request is sent once more with a freshly minted token if its body can be sent again (no
   * body, a string or a `Uint8Array`); otherwise the 401 is returned as is (the next call
   * mints a new token).
   *
   * The request goes through the same guard as the OAuth client's (https only unless
   * `allowHttpServers`, no private address unless listed in `dangerouslyAllowPrivateHosts`,
   * `httpTimeout`, answers up to 512 kB) and does not follow redirects unless `init.redirect`
   * says so: the token is meant for this audience only.
   * @throws what {@link getToken} throws, and a `FetchRequestError` when the URL is refused or
   * the audience cannot be reached
   */
  async fetchWithServiceAuth(
    did: string,
    request: Pick<AtProtoServiceTokenRequest, 'aud' | 'lxm'>,
    url: string | URL,
    init: RequestInit = {},
  ): Promise<Response> {
    const body = init.body;
    const replayable =
      body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array;
    const send = (token: string) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${token}`);
      return this.#fetch(url, { redirect: 'error', ...init, headers });
    };
    const key = { aud: request.aud, lxm: request.lxm };
    const first = await send(await this.#token(did, key, false));
    if (first.status !== 401) return first;
    // The audience refused the token (a rotated signing key, a clock that disagrees, a
    // token it has seen revoked): no instance should hand it out again.
    await this.invalidate(did, request.aud).catch((error: unknown) =>
      this.#logger.warn(
        `Dropping refused service-auth tokens from the shared cache failed: ${describeError(error)}`,
      ),
    );
    if (!replayable) return first;
    await first.body?.cancel().catch(() => undefined);
    // Minted, not read: the shared cache may still hold the refused token if the
    // invalidation above failed.
    return send(await this.#token(did, key, true));
  }

  /**
   * Forgets the cached tokens of `did`, or only those for `aud` (a bare DID also covers its
   * `did#service` forms), on every instance with `redis`. Tokens already handed out stay
   * valid at their audience until they expire: this only stops handing them out.
   * @throws AtProtoUnavailableError when the shared cache (Redis) cannot be reached: this
   * instance no longer hands the tokens out, other instances may until they expire
   */
  async invalidate(did: string, aud?: string): Promise<void> {
    await this.#cache.invalidate(did, aud);
  }

  /**
   * Counters of the cache since boot (`hits`, `misses`) and what it holds now (`entries`,
   * `valid`, `expired`). With `redis`, the counts are this instance's.
   */
  stats(): AtProtoServiceAuthStats {
    return this.#cache.stats();
  }

  #token(did: string, request: AtProtoServiceTokenRequest, fresh: boolean): Promise<string> {
    const key = checkRequest(did, request);
    return this.#cache.get(key, () => this.#mint(key, request.exp), fresh);
  }

  async #mint(key: ServiceTokenKey, exp: number | undefined): Promise<string> {
    const session = await this.#session(key.did);
    const params = new URLSearchParams({ aud: key.aud });
    if (key.lxm !== null) params.set('lxm', key.lxm);
    if (exp !== undefined) params.set('exp', String(exp));
    let response: Response;
    let body: unknown;
    try {
      response = await session.fetchHandler(`/xrpc/com.atproto.server.getServiceAuth?${params}`, {
        method: 'GET',
        headers: { accept: 'application/json' },
      });
      body = await response.json().catch(() => undefined);
    } catch (error) {
      throw this.#sessionError(key.did, error);
    }
    const token = (body as { token?: unknown } | undefined)?.token;
    if (response.ok && typeof token === 'string' && token.length > 0) return token;
    if (response.status === 401) {
      // The session's own retry (a refresh) was refused too: the OAuth client has deleted it.
      throw new AtProtoSessionUnavailableError('The AT Protocol session has ended. Log in again.', {
        did: key.did,
      });
    }
    if (response.status >= 400 && response.status < 500 && response.status !== 429) {
      throw serviceAuthRefusal(response.status, body, key);
    }
    this.#logger.warn(
      `getServiceAuth answered ${response.status}${response.ok ? ' without a token' : ''} for ${key.aud}`,
    );
    throw new AtProtoUpstreamError(
      'The PDS did not issue a service-auth token right now. Try again.',
    );
  }

  /**
   * The session that asks the PDS for a token: the DID's OAuth session, or, when it has
   * none, its bot session (`AtProtoBotSessionService`). The bot store is read only then, so
   * users' tokens cost nothing more.
   */
  async #session(did: string): Promise<{
    fetchHandler(url: string, init: RequestInit): Promise<Response>;
  }> {
    try {
      return await this.auth.restore(did);
    } catch (error) {
      if (
        error instanceof AtProtoSessionUnavailableError &&
        this.bots &&
        (await this.bots.has(did))
      ) {
        return this.bots.restore(did);
      }
      throw error;
    }
  }

  #sessionError(did: string, error: unknown): Error {
    if (error instanceof AtProtoError && error.code !== 'ERR_AT_PROTO_LOCK') return error;
    if (isSessionEndedError(error)) {
      return new AtProtoSessionUnavailableError(
        'The AT Protocol session has ended. Log in again.',
        { cause: error, did },
      );
    }
    this.#logger.warn(`Asking the PDS for a service-auth token failed: ${describeError(error)}`);
    return new AtProtoUpstreamError(
      'The PDS could not be reached for a service-auth token. Try again.',
      { cause: error },
    );
  }
}

/** The cache key of a request, after checking what the PDS would refuse anyway. */
function checkRequest(did: string, request: AtProtoServiceTokenRequest): ServiceTokenKey {
  const problems: string[] = [];
  if (typeof did !== 'string' || did.length > MAX_DID || !DID.test(did)) {
    problems.push('did must be a DID such as did:plc:…');
  }
  const { aud, lxm, exp } = (request ?? {}) as Partial<AtProtoServiceTokenRequest>;
  if (typeof aud !== 'string' || aud.length > MAX_DID || !AUDIENCE.test(aud)) {
    problems.push(
      'aud must be a DID, optionally with a #service fragment (did:web:example.com#svc)',
    );
  }
  if (lxm !== null && (typeof lxm !== 'string' || lxm.length > 317 || !NSID.test(lxm))) {
    problems.push('lxm must be an NSID such as app.bsky.feed.getFeedSkeleton, or null');
  }
  if (exp !== undefined && !(Number.isInteger(exp) && exp > 0 && exp < 1e11)) {
    problems.push('exp must be whole epoch seconds (not milliseconds)');
  }
  if (problems.length > 0) {
    throw new AtProtoServiceAuthError(
      'invalid-request',
      `A service-auth token cannot be asked for: ${problems.join('; ')}.`,
    );
  }
  return { did, aud: aud as string, lxm: lxm as string | null };
}
