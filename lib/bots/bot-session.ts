import type { StoredBotSession } from './bot-session.store.js';

/** What a bot session needs from its service. @internal */
export interface BotSessionOwner {
  readonly fetch: typeof globalThis.fetch;
  readonly refreshMarginMs: number;
  /**
   * Refreshes under the bot's lock unless the stored refresh JWT differs from `stale` (the
   * one of the session the caller used): then another caller has refreshed already.
   */
  refresh(did: string, stale: string): Promise<StoredBotSession>;
}

/**
 * A bot's app-password session, as `@atproto/api`'s `Agent` takes it (a session manager:
 * `did` and `fetchHandler`): `new Agent(session)`.
 *
 * `fetchHandler` sends each call to the bot's PDS with the stored access JWT. When that
 * JWT expires within `bots.refreshMargin`, or the PDS answers 401 or `ExpiredToken`, it
 * refreshes through the module's locked path (once across every instance) and sends the
 * call once more if its body can be sent again. Never wrap the tokens in an `AtpAgent` or
 * `CredentialSession`: those refresh on their own, outside the lock, and a refresh JWT
 * presented twice ends the session.
 * @publicApi
 */
export class AtProtoBotSession {
  readonly #owner: BotSessionOwner;
  #session: StoredBotSession;

  /** @internal */
  constructor(owner: BotSessionOwner, session: StoredBotSession) {
    this.#owner = owner;
    this.#session = session;
  }

  /** The bot's DID. */
  get did(): string {
    return this.#session.did;
  }

  /** The bot's handle, as its PDS last said. */
  get handle(): string {
    return this.#session.handle;
  }

  /** The bot's PDS (where every call goes). */
  get serviceUrl(): URL {
    return new URL(this.#session.pdsUrl);
  }

  /** When the current access JWT expires, if readable. */
  get accessExpiresAt(): Date | undefined {
    const at = this.#session.accessExpiresAt;
    return at === null ? undefined : new Date(at);
  }

  /** When the session ends (its refresh JWT's expiry) unless refreshed before. */
  get expiresAt(): Date {
    return new Date(this.#session.expiresAt);
  }

  /**
   * Sends `init` to `url` (a path such as `/xrpc/app.bsky.feed.getTimeline`, resolved
   * against the bot's PDS) with the bot's access JWT, refreshing it when needed. An arrow
   * function: the `Agent` calls it unbound.
   * @throws AtProtoBotSessionError when a refresh is refused (the session may have ended)
   * @throws AtProtoUpstreamError when a refresh cannot reach the PDS
   */
  readonly fetchHandler = async (url: string, init: RequestInit = {}): Promise<Response> => {
    let session = this.#session;
    const expiresAt = session.accessExpiresAt;
    if (expiresAt !== null && expiresAt - this.#owner.refreshMarginMs <= Date.now()) {
      session = await this.#refresh(session.refreshJwt);
    }
    const first = await this.#send(session, url, init);
    if (!(await isExpiredAnswer(first))) return first;
    const body = init.body;
    const replayable =
      body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array;
    session = await this.#refresh(session.refreshJwt);
    if (!replayable) return first;
    await first.body?.cancel().catch(() => undefined);
    return this.#send(session, url, init);
  };

  /**
   * Compared by refresh JWT, not access JWT: the PDS's access JWTs carry no unique id, so
   * two issued within the same second for the same account are the same string, while
   * each refresh JWT has its own `jti`.
   */
  async #refresh(stale: string): Promise<StoredBotSession> {
    this.#session = await this.#owner.refresh(this.#session.did, stale);
    return this.#session;
  }

  #send(session: StoredBotSession, url: string, init: RequestInit): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${session.accessJwt}`);
    // The token is for this PDS only: no redirect elsewhere unless the caller says so.
    return this.#owner.fetch(new URL(url, session.pdsUrl), {
      redirect: 'error',
      ...init,
      headers,
    });
  }
}

/** A 401, or a 400 whose XRPC error is `ExpiredToken` (what the PDS answers an old JWT). */
async function isExpiredAnswer(response: Response): Promise<boolean> {
  if (response.status === 401) return true;
  if (response.status !== 400) return false;
  const body: unknown = await response
    .clone()
    .json()
    .catch(() => undefined);
  return (body as { error?: unknown } | undefined)?.error === 'ExpiredToken';
}
