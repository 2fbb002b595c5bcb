import { hash, randomBytes } from 'node:crypto';
import { Inject, Injectable, Logger, Optional } from '@nestjs/common';
import { AT_PROTO_APP_SESSION_STORE, AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import type { AppSessionRecord, AppSessionStore } from '../storage/store.interface.js';
import { describeError } from '../errors/describe-error.js';
import { AtProtoCacheInvalidation } from '../invalidation/cache-invalidation.js';
import { RevocableCache } from '../invalidation/revocable-cache.js';

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
  // per request costs more than the rest of a typical route (docs/benchmarks.md). Only
  // sessions found in the store are cached, so unknown tokens cannot fill it. Bounded by
  // `appSession.cacheMaxEntries`, least recently used first out, with a DID index so that a
  // logout everywhere drops a DID's entries without a scan (see RevocableCache).
  //
  // How long an entry lives: `appSession.cacheTtl` (2 s by default), or
  // `appSession.invalidatedCacheTtl` (5 min) while revocations made on other instances are
  // known to reach this one (AtProtoCacheInvalidation: the Redis channel and the database
  // cursor, both proven). A revocation through this instance drops the entry at once and
  // is published to the others after its write. Revocations, here or reported from
  // elsewhere, leave a tombstone, so that a validation whose store read was in flight
  // cannot cache (and accept) the record it read just before.
  readonly #cache: RevocableCache<AppSessionRecord>;

  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    @Inject(AT_PROTO_APP_SESSION_STORE) private readonly store: AppSessionStore,
    @Optional() private readonly invalidation?: AtProtoCacheInvalidation,
  ) {
    const { cacheTtlMs, cacheMaxEntries, invalidatedCacheTtlMs } = options.appSession;
    this.#cache = new RevocableCache({
      shortTtlMs: cacheTtlMs,
      longTtlMs: invalidatedCacheTtlMs ?? cacheTtlMs,
      maxEntries: cacheMaxEntries,
      trust: invalidation,
    });
    invalidation?.listen({
      invalidated: (event, now) => {
        if (event.kind === 'session') this.#cache.revokeId(event.id, now);
        else if (event.kind === 'did') this.#cache.revokeDid(event.did, event.at, now);
      },
      dropAll: (now) => this.#cache.clear(now),
    });
  }

  /** The session id (stored key) of a token: SHA-256, lowercase hex. */
  static idOf(token: string): string {
    // One-shot `crypto.hash`: about half the cost of createHash().update().digest() on a
    // 43-character token, paid by every cookie request.
    return hash('sha256', token, 'hex');
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
    const id = AppSessionService.idOfToken(token);
    return id === undefined ? undefined : this.validateId(id);
  }

  /** The session id of a well-formed token, or `undefined` for a malformed one. @internal */
  static idOfToken(token: string | undefined): string | undefined {
    return token && TOKEN_SYNTAX.test(token) ? AppSessionService.idOf(token) : undefined;
  }

  /**
   * The guard's synchronous path: the active session with id `id` if this instance's cache
   * holds it, recording activity like {@link validateId}; `undefined` when only the store
   * can tell (not cached, or idle according to the cached copy): then call `validateId`.
   * Why: a cache hit then costs no promise, no await and no copy of the record (the guard
   * runs on every request, and those were a measurable part of its cost).
   * @internal
   */
  cachedActive(id: string): AppSessionRecord | undefined {
    const now = Date.now();
    const record = this.#cache.get(id, now);
    if (record === undefined || !this.isActive(record, now)) return undefined;
    this.#touch(record, now);
    return record;
  }

  /**
   * The active session with id `id` (what a bearer access token names), or `undefined`;
   * like {@link validate}, through the same cache, so a revocation reaches bearer requests as
   * fast as cookie ones. Records activity at most once a minute.
   */
  async validateId(id: string): Promise<AppSessionInfo | undefined> {
    if (!SESSION_ID.test(id)) return undefined;
    const now = Date.now();
    let record = this.#cache.get(id, now);
    if (record !== undefined && !this.isActive(record, now) && !this.#endedFor(record, now)) {
      // Idle according to this copy only: another instance may have recorded activity
      // since it was cached (entries may live minutes). The store decides.
      this.#cache.delete(id);
      record = undefined;
    }
    record ??= await this.#read(id);
    if (!record || !this.isActive(record, now)) return undefined;
    this.#touch(record, now);
    return toInfo(record);
  }

  /** Records activity of `record` at most once a minute. */
  #touch(record: AppSessionRecord, now: number): void {
    if (now - record.lastSeenAt.getTime() < TOUCH_INTERVAL_MS) return;
    // Not awaited: the request need not wait for bookkeeping, and a failed write only
    // delays the idle timeout; it never blocks a signed-in user.
    this.store.touch(record.id, new Date(now)).catch((error: unknown) => {
      this.#logger.warn(`Could not record activity of an app session: ${describeError(error)}`);
    });
    record.lastSeenAt = new Date(now);
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
    // Tombstoned before the write, so that a validation reading the row meanwhile does
    // not cache it, and again once the write has landed: a read that started before then
    // may hold the row as it was (RevocableCache does not cache such reads).
    this.#cache.revokeId(sessionId, Date.now());
    const revoked = await this.store.revoke(sessionId, new Date());
    this.#cache.revokeId(sessionId, Date.now());
    // After the write: an instance that hears of it and reads the row sees it revoked.
    if (revoked) this.invalidation?.publish({ kind: 'session', id: sessionId });
    return revoked;
  }

  /** Revokes every session of `did` (log out everywhere); resolves how many. */
  async revokeAll(did: string): Promise<number> {
    const at = new Date();
    this.#cache.revokeDid(did, at.getTime(), Date.now());
    const count = await this.store.revokeAllForDid(did, at);
    this.#cache.revokeDid(did, at.getTime(), Date.now());
    if (count > 0) this.invalidation?.publish({ kind: 'did', did, at: at.getTime() });
    return count;
  }

  /** A store read, cached unless a revocation known here forbids it (see RevocableCache). */
  async #read(id: string): Promise<AppSessionRecord | undefined> {
    const startedAt = Date.now();
    const record = await this.store.get(id);
    if (!record || !this.#cache.enabled) return record;
    const now = Date.now();
    // Revoked here or reported from elsewhere while the read was under way: the row may
    // have been read just before the revocation landed.
    if (this.#cache.revoked(record, now)) return undefined;
    this.#cache.put(record, startedAt, now);
    return record;
  }

  /** Revoked or past its absolute lifetime: ended whatever other instances have seen. */
  #endedFor(record: AppSessionRecord, now: number): boolean {
    return record.revokedAt !== null || record.expiresAt.getTime() <= now;
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
