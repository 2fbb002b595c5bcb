import { Inject, Injectable, Logger } from '@nestjs/common';
import type { NodeOAuthClient } from '@atproto/oauth-client-node';
import { AT_PROTO_OAUTH_CLIENT, AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { AtProtoBotSessionError } from '../errors/at-proto-bot-session.error.js';
import { AtProtoUpstreamError } from '../errors/at-proto-http.errors.js';
import { AtProtoLockError } from '../errors/at-proto-lock.error.js';
import { describeError } from '../errors/describe-error.js';
import { type AtProtoEvent, AtProtoEvents } from '../events/at-proto-events.js';
import { AtProtoRequestLock } from '../lock/request-lock.js';
import { createOutboundFetch, parsePrivateHost } from '../oauth/outbound-fetch.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { AT_PROTO_BOT_SESSION_STORE, botLockName } from './bot.constants.js';
import { AtProtoBotSession, type BotSessionOwner } from './bot-session.js';
import type {
  BotSessionStore,
  StoredBotSession,
  VersionedBotSession,
} from './bot-session.store.js';
import { APP_PASSWORD, jwtExpiry, REASON_MESSAGES, refusalReason, xrpcError } from './bot-xrpc.js';

/**
 * Options of {@link AtProtoBotSessionService.login}.
 * @publicApi
 */
export interface AtProtoBotLoginOptions {
  /**
   * Log in even if a stored session could be reused, and end the previous session at the
   * PDS (`deleteSession`). The PDS allows 30 logins per 5 minutes and 300 per day per
   * identifier: do not force a login on every boot. @default false
   */
  force?: boolean;
}

/** Longest identifier or password sent (the PDS's own limits are lower). */
const MAX_INPUT = 512;

/**
 * Bot accounts that log in with an app password (`com.atproto.server.createSession`), for
 * backends that act as an account of their own rather than on behalf of a signed-in user.
 *
 * The access and refresh JWTs are stored encrypted (`atproto_bot_session`, like OAuth
 * sessions), never the password. Every refresh (`com.atproto.server.refreshSession`) runs
 * under the bot's distributed lock (`atproto-bot-<did>`) and re-reads the stored session
 * first, so that one expiry is refreshed once across every instance: a refresh JWT is
 * single-use. Sessions are handed out as {@link AtProtoBotSession}, which `@atproto/api`'s
 * `Agent` takes as its session manager (`new Agent(session)`). See docs/bots.md.
 * @example
 * const session = await bots.login('bot.example.com', process.env.BOT_APP_PASSWORD!);
 * const agent = new Agent(session);
 * await agent.post({ text: 'Hello' });
 * @publicApi
 */
@Injectable()
export class AtProtoBotSessionService {
  readonly #logger = new Logger('AtProtoBotSession');
  readonly #fetch: typeof globalThis.fetch;
  readonly #owner: BotSessionOwner;

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    @Inject(AT_PROTO_BOT_SESSION_STORE) private readonly store: BotSessionStore,
    private readonly lock: AtProtoRequestLock,
    private readonly events: AtProtoEvents,
    @Inject(AT_PROTO_OAUTH_CLIENT) private readonly client: NodeOAuthClient,
  ) {
    // The same guard as the OAuth client's requests: the PDS comes from a DID document,
    // which anyone can write, and must not reach into private networks.
    this.#fetch = createOutboundFetch({
      allowHttp: options.allowHttpServers,
      privateHosts: options.privateHosts.flatMap((entry) => parsePrivateHost(entry) ?? []),
      timeoutMs: options.httpTimeoutMs,
    });
    this.#owner = {
      fetch: this.#fetch,
      refreshMarginMs: options.bots.refreshMarginMs,
      refresh: (did, stale) => this.#refresh(did, stale),
    };
  }

  /**
   * Logs the bot in with its handle (or DID) and app password, or reuses its stored session
   * while its refresh JWT is valid (unless `force`). The identifier is resolved to its PDS
   * through the guarded fetch; the password goes to that PDS only, and is neither stored
   * nor logged. A password that does not look like an app password (`xxxx-xxxx-xxxx-xxxx`)
   * is sent anyway, with a warning: the account's main password gives full rights.
   * @throws AtProtoBotSessionError when the PDS refuses (see its `reason`)
   * @throws AtProtoUpstreamError when the identifier or the PDS cannot be reached
   */
  async login(
    identifier: string,
    appPassword: string,
    options: AtProtoBotLoginOptions = {},
  ): Promise<AtProtoBotSession> {
    if (
      typeof identifier !== 'string' ||
      typeof appPassword !== 'string' ||
      identifier.trim().length === 0 ||
      appPassword.length === 0 ||
      identifier.length > MAX_INPUT ||
      appPassword.length > MAX_INPUT
    ) {
      throw new AtProtoBotSessionError('invalid-request', REASON_MESSAGES['invalid-request']);
    }
    const input = identifier.trim();
    if (!APP_PASSWORD.test(appPassword)) {
      this.#logger.warn(
        `The password given for bot ${input} does not look like an app password ` +
          '(xxxx-xxxx-xxxx-xxxx): an account password gives the bot every right of the account. ' +
          'Create an app password in the account settings.',
      );
    }
    const { did, pdsUrl } = await this.#resolve(input);
    const pending: AtProtoEvent[] = [];
    const session = await this.lock.run(botLockName(did), async () => {
      const current = await this.store.get(did);
      if (current && !options.force && this.#reusable(current.value, pdsUrl)) {
        return current.value;
      }
      const created = await this.#createSession(pdsUrl, input, appPassword, did);
      await this.store.set(created);
      pending.push({ type: 'bot-session-created', did });
      if (current) {
        // The previous session is replaced: end it at the PDS too, so that its refresh JWT
        // cannot be used any more. Failing that changes nothing for the new session.
        await this.#deleteSession(current.value);
        pending.push({ type: 'bot-session-ended', did, reason: 'replaced' });
      }
      return created;
    });
    for (const event of pending) this.events.emit(event);
    return new AtProtoBotSession(this.#owner, session);
  }

  /**
   * The stored session of bot `did`, without contacting the PDS (a refresh happens on the
   * first call that needs one).
   * @throws AtProtoBotSessionError `not-logged-in` when none is stored
   */
  async restore(did: string): Promise<AtProtoBotSession> {
    const current = await this.store.get(did);
    if (!current) throw await this.#notLoggedIn(did);
    return new AtProtoBotSession(this.#owner, current.value);
  }

  /**
   * Whether bot `did` has a stored session (maybe with an expired access JWT, which is
   * refreshed on use). One read of the store, no network.
   */
  async has(did: string): Promise<boolean> {
    return (await this.store.get(did)) !== undefined;
  }

  /**
   * Refreshes the session of bot `did` now, under its lock (`refreshSession`).
   * @throws AtProtoBotSessionError when the PDS refuses: `expired`, `invalid`,
   * `account-takedown` and `account-deactivated` end the session
   * @throws AtProtoUpstreamError when the PDS cannot be reached (the session is kept)
   */
  async refresh(did: string): Promise<AtProtoBotSession> {
    return new AtProtoBotSession(this.#owner, await this.#refresh(did, undefined));
  }

  /**
   * Ends the session of bot `did`: at the PDS (`deleteSession`, best effort) and here.
   * Nothing happens when none is stored.
   */
  async logout(did: string): Promise<void> {
    const ended = await this.lock.run(botLockName(did), async () => {
      const current = await this.store.get(did);
      if (!current) return false;
      await this.#deleteSession(current.value);
      return this.store.delIfVersion(did, current.version);
    });
    if (ended) this.events.emit({ type: 'bot-session-ended', did, reason: 'logout' });
  }

  /**
   * Deletes up to `batchSize` sessions whose refresh JWT had expired at `now`, reporting each
   * end once (`bot-session-ended`, reason `expired`); resolves how many. Cleanup runs it, so
   * that a bot that is never used again does not keep its row. A session refreshed meanwhile
   * is not expired any more and stays (the delete repeats the condition).
   * @internal
   */
  async sweepExpired(now: number, batchSize: number): Promise<number> {
    let deleted = 0;
    for (const did of await this.store.listExpired(now, batchSize)) {
      if (!(await this.store.deleteExpired(did))) continue;
      deleted++;
      this.events.emit({ type: 'bot-session-ended', did, reason: 'expired' });
    }
    return deleted;
  }

  /**
   * The error for a DID without a session. A session whose refresh JWT has expired (90 days
   * on the reference PDS) is deleted here, and its end reported once.
   */
  async #notLoggedIn(did: string): Promise<AtProtoBotSessionError> {
    const expired = await this.store.deleteExpired(did).catch((error: unknown) => {
      this.#logger.warn(`Deleting an expired bot session failed: ${describeError(error)}`);
      return false;
    });
    if (expired) {
      // Outside the lock's work: subscribers may call this service again.
      queueMicrotask(() => this.events.emit({ type: 'bot-session-ended', did, reason: 'expired' }));
    }
    return new AtProtoBotSessionError('not-logged-in', REASON_MESSAGES['not-logged-in'], { did });
  }

  /** Whether a stored session can be handed out instead of logging in again. */
  #reusable(session: StoredBotSession, pdsUrl: string): boolean {
    // An account that moved to another PDS needs a login there.
    if (session.pdsUrl !== pdsUrl) return false;
    return session.expiresAt - Date.now() > this.options.httpTimeoutMs + 60_000;
  }

  /**
   * Refreshes under the bot's lock. `stale` is the refresh JWT of the session whose access
   * JWT the caller found expired or refused: when the stored one differs, another caller (maybe on another instance) has
   * refreshed meanwhile, and its session is handed out instead of refreshing again.
   * `undefined` forces the refresh.
   */
  async #refresh(did: string, stale: string | undefined): Promise<StoredBotSession> {
    const pending: AtProtoEvent[] = [];
    try {
      return await this.lock.run(botLockName(did), async (lease) => {
        // Inside the lock, from the store's primary: never from a cache.
        const current = await this.store.get(did);
        if (!current) throw await this.#notLoggedIn(did);
        if (stale !== undefined && current.value.refreshJwt !== stale) return current.value;
        // The refresh JWT is single-use: if the lock could expire before the answer, another
        // instance could present it again and be refused. Do not send it.
        if (lease.remainingMs() < this.options.httpTimeoutMs + 1000) {
          throw new AtProtoLockError(
            'The bot lock could expire before the refresh completes; the refresh was not sent ' +
              'and the session is unchanged. Try again.',
          );
        }
        return this.#refreshHeld(current, pending);
      });
    } finally {
      for (const event of pending) this.events.emit(event);
    }
  }

  async #refreshHeld(
    current: VersionedBotSession,
    pending: AtProtoEvent[],
  ): Promise<StoredBotSession> {
    const { did, pdsUrl } = current.value;
    const { response, body } = await this.#xrpc(
      pdsUrl,
      'com.atproto.server.refreshSession',
      current.value.refreshJwt,
    );
    if (!response.ok) {
      const error = this.#refusal(response.status, body, did);
      const pdsMessage = xrpcError(body).message;
      if (error.ended) {
        if (await this.store.delIfVersion(did, current.version)) {
          pending.push({
            type: 'bot-session-ended',
            did,
            reason: error.reason as 'expired',
            ...(pdsMessage ? { message: pdsMessage } : {}),
          });
        }
      }
      throw error;
    }
    const next = this.#sessionFrom(body, pdsUrl, did);
    const version = await this.store.setIfVersion(next, current.version);
    if (version === undefined) {
      // The row changed or went since it was read under the lock: the lock was lost
      // meanwhile, or the session ended (expired and swept, or logged out). What is stored
      // is kept; these tokens are still valid for this caller.
      this.#logger.warn(
        'A bot session write was refused because the session changed or ended since it was ' +
          'read under the bot lock (the lock was lost meanwhile, or a logout or cleanup ended ' +
          'it). What is stored is kept.',
      );
    } else {
      pending.push({ type: 'bot-session-refreshed', did });
    }
    return next;
  }

  async #createSession(
    pdsUrl: string,
    identifier: string,
    password: string,
    did: string,
  ): Promise<StoredBotSession> {
    const { response, body } = await this.#xrpc(
      pdsUrl,
      'com.atproto.server.createSession',
      undefined,
      JSON.stringify({ identifier, password }),
    );
    if (!response.ok) throw this.#refusal(response.status, body, did);
    return this.#sessionFrom(body, pdsUrl, did);
  }

  async #deleteSession(session: StoredBotSession): Promise<void> {
    try {
      const { response } = await this.#xrpc(
        session.pdsUrl,
        'com.atproto.server.deleteSession',
        session.refreshJwt,
      );
      // 400/401: already ended (expired or revoked), which is what was asked.
      if (!response.ok && response.status >= 500) {
        this.#logger.warn(`Ending a replaced bot session at its PDS answered ${response.status}.`);
      }
    } catch (error) {
      this.#logger.warn(`Ending a replaced bot session at its PDS failed: ${describeError(error)}`);
    }
  }

  /** A POST to `nsid` at `pdsUrl`, authorized by `bearer` (a JWT) if given. */
  async #xrpc(
    pdsUrl: string,
    nsid: string,
    bearer: string | undefined,
    json?: string,
  ): Promise<{ response: Response; body: unknown }> {
    const headers = new Headers({ accept: 'application/json' });
    if (bearer) headers.set('authorization', `Bearer ${bearer}`);
    if (json !== undefined) headers.set('content-type', 'application/json');
    try {
      // Never follow a redirect: the body or the bearer would go elsewhere.
      const response = await this.#fetch(new URL(`/xrpc/${nsid}`, pdsUrl), {
        method: 'POST',
        headers,
        body: json,
        redirect: 'error',
      });
      const body: unknown = await response.json().catch(() => undefined);
      return { response, body };
    } catch (error) {
      this.#logger.warn(`${nsid} could not reach the bot's PDS: ${describeError(error)}`);
      throw new AtProtoUpstreamError("The bot's PDS could not be reached. Try again.", {
        cause: error,
      });
    }
  }

  #refusal(status: number, body: unknown, did: string): AtProtoBotSessionError {
    const { error } = xrpcError(body);
    const reason = refusalReason(status, error);
    if (!reason) {
      this.#logger.warn(`The bot's PDS answered ${status}${error ? ` (${error})` : ''}.`);
      throw new AtProtoUpstreamError("The bot's PDS failed to answer. Try again.");
    }
    // The PDS's own text goes to the event only (sanitized there), never into the error.
    return new AtProtoBotSessionError(reason, REASON_MESSAGES[reason], {
      did,
      pdsError: error,
      status,
    });
  }

  /** The session in a `createSession` / `refreshSession` answer, checked. */
  #sessionFrom(body: unknown, pdsUrl: string, did: string): StoredBotSession {
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const { accessJwt, refreshJwt, handle } = b;
    if (typeof accessJwt !== 'string' || typeof refreshJwt !== 'string' || b.did !== did) {
      // A PDS answering for another account than the identifier resolved to is not trusted.
      this.#logger.warn("The bot's PDS answered a session for another account, or no session.");
      throw new AtProtoUpstreamError("The bot's PDS answered unexpectedly. Try again.");
    }
    const expiresAt = jwtExpiry(refreshJwt);
    return {
      did,
      handle: typeof handle === 'string' ? handle.slice(0, 253) : 'handle.invalid',
      pdsUrl,
      accessJwt,
      refreshJwt,
      accessExpiresAt: jwtExpiry(accessJwt),
      // A refresh JWT whose expiry cannot be read: the reference PDS's 90 days, at most.
      expiresAt: expiresAt ?? Date.now() + 90 * 86_400_000,
    };
  }

  /** The DID of `identifier` (a handle or a DID) and its PDS, from its DID document. */
  async #resolve(identifier: string): Promise<{ did: string; pdsUrl: string }> {
    let identity: Awaited<ReturnType<NodeOAuthClient['identityResolver']['resolve']>>;
    try {
      identity = await this.client.identityResolver.resolve(identifier);
    } catch (error) {
      this.#logger.warn(`Resolving bot ${identifier} failed: ${describeError(error)}`);
      throw new AtProtoUpstreamError(
        `The bot identifier ${identifier} could not be resolved to an account (a handle or a DID).`,
        { cause: error },
      );
    }
    const service = identity.didDoc.service?.find(
      (s) =>
        (s.id === '#atproto_pds' || s.id === `${identity.did}#atproto_pds`) &&
        s.type === 'AtprotoPersonalDataServer' &&
        typeof s.serviceEndpoint === 'string',
    );
    const endpoint = service?.serviceEndpoint as string | undefined;
    if (!endpoint || !URL.canParse(endpoint)) {
      throw new AtProtoUpstreamError(`The DID document of bot ${identifier} names no PDS.`);
    }
    return { did: identity.did, pdsUrl: new URL(endpoint).origin };
  }
}
