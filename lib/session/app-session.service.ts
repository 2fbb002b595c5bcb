import { createHash, randomBytes } from 'node:crypto';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { AT_PROTO_APP_SESSION_STORE, AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import type { AppSessionRecord, AppSessionStore } from '../storage/store.interface.js';
import { describeError } from '../errors/describe-error.js';

/** `lastSeenAt` is written at most this often per session, not on every request. */
const TOUCH_INTERVAL_MS = 60_000;
/** 32 random bytes in base64url: 256 bits of entropy. */
const TOKEN_SYNTAX = /^[A-Za-z0-9_-]{43}$/;
/** A session id: the SHA-256 of a token, lowercase hex. */
const SESSION_ID = /^[0-9a-f]{64}$/;

/**
 * An active app session, as shown on an "active devices" page.
 * @publicApi
 */
export interface AppSessionInfo {
  /** Stable id of the session (the SHA-256 of its token); safe to show and to revoke by. */
  id: string;
  did: string;
  createdAt: Date;
  expiresAt: Date;
  lastSeenAt: Date;
  userAgent: string | null;
}

/**
 * The backend's own login sessions: one per signed-in device, many per DID, all sharing
 * the DID's one OAuth session. The browser holds an opaque random token (256 bits); only
 * its SHA-256 is stored, so a database dump contains no usable credential.
 * @publicApi
 */
@Injectable()
export class AppSessionService {
  readonly #logger = new Logger('AtProtoAppSession');
  // Why a cache: the guard validates the app session on every request, and a database read
  // per request costs more than the rest of a typical route (docs/benchmarks.md). Entries
  // live `appSession.cacheTtl` (2 s by default); a revocation through this instance drops
  // them at once, one made on another instance takes effect here within the TTL. Only
  // sessions found in the store are cached, so unknown tokens cannot fill it. Bounded by
  // `appSession.cacheMaxEntries`, least recently used first out (a Map keeps insertion order:
  // a hit moves its entry to the end). `#byDid` indexes it, so that a logout everywhere drops
  // a DID's entries without scanning the whole cache.
  readonly #cache = new Map<string, { record: AppSessionRecord; until: number }>();
  readonly #byDid = new Map<string, Set<string>>();
  // Revocations made through this instance, kept for one cache TTL: a validation whose
  // store read was already in flight when the revocation happened must not cache (and
  // accept) the record it read just before.
  readonly #revokedIds = new Map<string, { at: number; until: number }>();
  readonly #revokedDids = new Map<string, { at: number; until: number }>();

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    @Inject(AT_PROTO_APP_SESSION_STORE) private readonly store: AppSessionStore,
  ) {}

  /** The session id (stored key) of a token: SHA-256, lowercase hex. */
  static idOf(token: string): string {
    return createHash('sha256').update(token, 'utf8').digest('hex');
  }

  /**
   * Starts a session for `did`. Returns the token to hand to the client (cookie or bearer)
   * — it is not stored anywhere — and the session's info.
   */
  async create(
    did: string,
    userAgent?: string,
  ): Promise<{ token: string; session: AppSessionInfo }> {
    const token = randomBytes(32).toString('base64url');
    const now = Date.now();
    const record: AppSessionRecord = {
      id: AppSessionService.idOf(token),
      did,
      createdAt: new Date(now),
      expiresAt: new Date(now + this.options.appSession.absoluteTtlMs),
      lastSeenAt: new Date(now),
      revokedAt: null,
      userAgent: userAgent?.slice(0, 512) ?? null,
    };
    await this.store.create(record);
    return { token, session: toInfo(record) };
  }

  /**
   * The active session a token opens, or `undefined` when the token is malformed, unknown,
   * revoked, expired or idle for too long. Records activity at most once a minute.
   */
  async validate(token: string | undefined): Promise<AppSessionInfo | undefined> {
    if (!token || !TOKEN_SYNTAX.test(token)) return undefined;
    return this.validateId(AppSessionService.idOf(token));
  }

  /**
   * The active session with id `id` (what a bearer access token names), or `undefined`;
   * like {@link validate}, through the same cache, so a revocation reaches bearer requests as
   * fast as cookie ones. Records activity at most once a minute.
   */
  async validateId(id: string): Promise<AppSessionInfo | undefined> {
    if (!SESSION_ID.test(id)) return undefined;
    const now = Date.now();
    const record = await this.#lookup(id, now);
    if (!record || !this.isActive(record, now)) return undefined;
    if (now - record.lastSeenAt.getTime() >= TOUCH_INTERVAL_MS) {
      // Not awaited: the request need not wait for bookkeeping, and a failed write only
      // delays the idle timeout; it never blocks a signed-in user.
      this.store.touch(record.id, new Date(now)).catch((error: unknown) => {
        this.#logger.warn(`Could not record activity of an app session: ${describeError(error)}`);
      });
      record.lastSeenAt = new Date(now);
    }
    return toInfo(record);
  }

  /**
   * Revokes one session; resolves `true` if it was active.
   *
   * A page that lets users end sessions (an "active devices" page) must pass `owner`, the
   * signed-in user's DID: the id comes from the request, and without the owner any user
   * could end another user's session by its id. With `owner`, a session of another DID (or
   * an unknown id) is left untouched and the call resolves `false`. The one-argument form
   * is for callers that hold an id they got from a validated session.
   *
   * @example
   * // POST /devices/:id/revoke, behind AtProtoAuthGuard
   * await appSessions.revoke(params.id, { did: auth.did });
   */
  async revoke(sessionId: string, owner?: { did: string }): Promise<boolean> {
    if (owner !== undefined) {
      // The DID of a session is set when it is created and no store operation changes it,
      // so checking it first and revoking by id afterwards cannot end someone else's session.
      const record = await this.store.get(sessionId);
      if (!record || record.did !== owner.did) return false;
    }
    this.#uncache(sessionId);
    this.#remember(this.#revokedIds, sessionId);
    return this.store.revoke(sessionId, new Date());
  }

  /** Revokes every session of `did` (log out everywhere); resolves how many. */
  revokeAll(did: string): Promise<number> {
    for (const id of this.#byDid.get(did) ?? []) this.#uncache(id);
    this.#remember(this.#revokedDids, did);
    return this.store.revokeAllForDid(did, new Date());
  }

  #remember(map: Map<string, { at: number; until: number }>, key: string): void {
    const ttl = this.options.appSession.cacheTtlMs;
    if (ttl <= 0) return;
    const now = Date.now();
    for (const [k, entry] of map) if (entry.until <= now) map.delete(k);
    map.set(key, { at: now, until: now + ttl });
  }

  /** Revoked through this instance within the last cache TTL (sessions created later are not). */
  #revokedHere(record: AppSessionRecord, now: number): boolean {
    const hit = (entry: { at: number; until: number } | undefined) =>
      entry !== undefined && entry.until > now && record.createdAt.getTime() <= entry.at;
    return hit(this.#revokedIds.get(record.id)) || hit(this.#revokedDids.get(record.did));
  }

  async #lookup(id: string, now: number): Promise<AppSessionRecord | undefined> {
    const ttl = this.options.appSession.cacheTtlMs;
    const cached = this.#cache.get(id);
    if (cached && cached.until > now) {
      // Most recently used: to the end of the eviction order.
      this.#cache.delete(id);
      this.#cache.set(id, cached);
      return cached.record;
    }
    const record = await this.store.get(id);
    if (record && ttl > 0 && this.#revokedHere(record, Date.now())) return undefined;
    if (ttl > 0) {
      this.#uncache(id);
      if (record) {
        this.#cache.set(id, { record, until: now + ttl });
        let ids = this.#byDid.get(record.did);
        if (!ids) this.#byDid.set(record.did, (ids = new Set()));
        ids.add(id);
        const max = this.options.appSession.cacheMaxEntries;
        while (this.#cache.size > max) this.#uncache(this.#cache.keys().next().value as string);
      }
    }
    return record;
  }

  #uncache(id: string): void {
    const entry = this.#cache.get(id);
    if (!entry) return;
    this.#cache.delete(id);
    const ids = this.#byDid.get(entry.record.did);
    ids?.delete(id);
    if (ids?.size === 0) this.#byDid.delete(entry.record.did);
  }

  /** The active sessions of `did`, newest first. */
  async list(did: string): Promise<AppSessionInfo[]> {
    const now = Date.now();
    return (await this.store.listForDid(did)).filter((r) => this.isActive(r, now)).map(toInfo);
  }

  /** Whether `did` still has an active session (on any device). */
  async hasActive(did: string): Promise<boolean> {
    return (await this.list(did)).length > 0;
  }

  private isActive(record: AppSessionRecord, now: number): boolean {
    return (
      record.revokedAt === null &&
      record.expiresAt.getTime() > now &&
      record.lastSeenAt.getTime() + this.options.appSession.idleTtlMs > now
    );
  }
}

function toInfo(r: AppSessionRecord): AppSessionInfo {
  return {
    id: r.id,
    did: r.did,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    lastSeenAt: r.lastSeenAt,
    userAgent: r.userAgent,
  };
}
