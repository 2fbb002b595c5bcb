import { AsyncLocalStorage } from 'node:async_hooks';
import { Logger } from '@nestjs/common';
import { describeError } from '../errors/describe-error.js';
import { noRefreshScope, sessionLockName } from '../lock/lock-scope.js';
import { AtProtoLockError } from '../errors/at-proto-lock.error.js';
import type { AtProtoLockLease, AtProtoRequestLock } from '../lock/request-lock.js';
import { type AtProtoSessionStore, isVersionedSessionStore } from '../storage/store.interface.js';

/**
 * One lock held by the current async context, and what its holder read under it: the
 * version of each session it read (`null`: none was stored, or this holder deleted it), so
 * that its writes can be fenced, and whether it deleted a session.
 */
interface LockFrame {
  readonly lease: AtProtoLockLease;
  readonly versions: Map<string, number | null>;
  /** Sessions this holder deleted. */
  readonly deleted: Set<string>;
  /** Sessions whose write or delete by this holder was refused by the fence. */
  readonly fenced: Set<string>;
}

interface LockContext {
  readonly frames: ReadonlyMap<string, LockFrame>;
  /** Set in a {@link SessionLocks.holdUntilDone} context: releases of the locks kept. */
  readonly kept?: Array<() => Promise<void>>;
}

const lockContext = new AsyncLocalStorage<LockContext>();

/** The frame of lock `name` if the current async context holds it. @internal */
export function heldLock(name: string): LockFrame | undefined {
  return lockContext.getStore()?.frames.get(name);
}

/**
 * The module's view of the session lock, over whichever {@link AtProtoRequestLock} is in use.
 *
 * - **Re-entrant** within one async context: a holder that calls the OAuth client (whose
 *   own reads take the same lock, e.g. `client.revoke()` reads through `getSession`) must
 *   not wait for itself.
 * - **Held across a whole operation**: a revocation (read, call to the authorization server,
 *   delete) and a login's replacement of the previous session (revoke, delete, store) run
 *   under one hold, so that a refresh on another instance cannot interleave and store
 *   rotated tokens again after the delete, and another device never sees "no session"
 *   in the middle of a replacement.
 * - **Records what the holder read**, so that its writes can be fenced (see
 *   {@link fencedSessionStore}).
 * @internal
 */
export class SessionLocks {
  constructor(readonly lock: AtProtoRequestLock) {}

  /** Runs `fn` holding lock `name` (at once if this context already holds it). */
  async run<T>(name: string, fn: () => T | PromiseLike<T>): Promise<T> {
    const context = lockContext.getStore();
    if (context?.frames.has(name)) return fn();
    // A read that cannot refresh (see lock/lock-scope.ts): the lock lets it through without
    // taking anything, so nothing is recorded as held.
    if (noRefreshScope.getStore()?.lockName === name) return this.lock.run(name, () => fn());
    if (context?.kept) {
      await this.#keep(context, name);
      return fn();
    }
    return this.lock.run(name, (lease) => {
      const frames = new Map(context?.frames ?? []);
      frames.set(name, { lease, versions: new Map(), deleted: new Set(), fenced: new Set() });
      return lockContext.run({ frames }, fn);
    });
  }

  /**
   * Runs `fn` so that every lock it takes through {@link run} is kept until `fn` has
   * finished, not released when the inner call returns. For the login callback: the DID is
   * only known once the OAuth client has exchanged the code, when it first takes the DID's
   * lock (to read and revoke the previous session); from there to the storing of the new
   * session, and the creation of the app session, the lock must stay held.
   */
  async holdUntilDone<T>(fn: () => Promise<T>): Promise<T> {
    const context: LockContext = {
      frames: new Map(lockContext.getStore()?.frames ?? []),
      kept: [],
    };
    try {
      return await lockContext.run(context, fn);
    } finally {
      await Promise.all(context.kept!.map((release) => release()));
    }
  }

  async #keep(context: LockContext, name: string): Promise<void> {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let held!: (lease: AtProtoLockLease) => void;
    const acquired = new Promise<AtProtoLockLease>((resolve) => (held = resolve));
    const done = this.lock.run(name, (lease) => {
      held(lease);
      return released;
    });
    context.kept!.push(async () => {
      release();
      await done.catch(() => undefined);
    });
    const lease = await Promise.race([acquired, done.then(() => acquired)]);
    (context.frames as Map<string, LockFrame>).set(name, {
      lease,
      versions: new Map(),
      deleted: new Set(),
      fenced: new Set(),
    });
  }
}

/**
 * Refuses to start a token refresh whose session lock could expire before the answer comes
 * back: the refresh token is single-use, so if the lock expired mid-request another instance
 * could take it and present the same refresh token, and the authorization server would then
 * revoke the whole grant (the user is logged out). Aborting before sending keeps the session
 * intact; the request fails with {@link AtProtoLockError} (never a `TypeError`, which would
 * make the OAuth client delete the session). A refresh outside any session lock is a bug of
 * this module, refused the same way.
 * @internal
 */
export function assertRefreshMayStart(request: Request, body: string, httpTimeoutMs: number): void {
  if (request.method !== 'POST') return;
  if (new URLSearchParams(body).get('grant_type') !== 'refresh_token') return;
  const frames = [...(lockContext.getStore()?.frames ?? new Map<string, LockFrame>()).entries()]
    .filter(([name]) => name.startsWith(sessionLockName('')))
    .map(([, frame]) => frame);
  const needed = httpTimeoutMs + 1000;
  if (frames.length === 0) {
    throw new AtProtoLockError(
      'A token refresh was about to start without the session lock; it was not sent. Try again.',
    );
  }
  if (frames.some((f) => f.lease.remainingMs() < needed)) {
    throw new AtProtoLockError(
      'The session lock could expire before the token refresh completes; the refresh was not ' +
        'sent and the session is unchanged. Try again.',
    );
  }
}

/** What the fenced store reports when a write is refused. @internal */
export type FencedWriteListener = (did: string, operation: 'set' | 'del') => void;

/**
 * The session store as the OAuth client sees it:
 * - inside a no-refresh scope, a read of the scope's DID returns the session the module has
 *   just read (see lock/lock-scope.ts);
 * - every write and delete runs with the DID's session lock held (taken here if the caller
 *   does not hold it: e.g. the client's delete of a session whose signing key is gone);
 * - a write or delete by a holder that read the session under the lock is **fenced**: it
 *   applies only if the stored session is still the version read, and never re-creates a
 *   session deleted meanwhile. A holder that lost its lock (a stalled process, a Redis
 *   failover) therefore cannot overwrite or delete a newer session. A fenced-out write
 *   resolves normally and is reported to `onFenced`: throwing would make the OAuth client
 *   revoke the tokens it was storing and delete the stored session, the newer one.
 * Stores without the versioned operations get plain `get`/`set`/`del`, under the lock.
 * @internal
 */
export function fencedSessionStore(
  store: AtProtoSessionStore,
  locks: SessionLocks,
  onFenced: FencedWriteListener,
): AtProtoSessionStore {
  const versioned = isVersionedSessionStore(store) ? store : undefined;
  const logger = new Logger('AtProtoSessionStore');
  const fenced = (did: string, operation: 'set' | 'del') => {
    logger.warn(
      `A session ${operation === 'set' ? 'write' : 'delete'} was refused because the session ` +
        'changed since it was read under the session lock (the lock was lost meanwhile). The ' +
        'newer session is kept.',
    );
    try {
      onFenced(did, operation);
    } catch (error) {
      logger.warn(`A fenced-write listener failed: ${describeError(error)}`);
    }
  };
  return {
    get: async (did) => {
      const scope = noRefreshScope.getStore();
      if (scope && scope.did === did) return scope.session;
      const frame = heldLock(sessionLockName(did));
      if (!frame || !versioned) return store.get(did);
      const read = await versioned.getVersioned(did);
      frame.versions.set(did, read?.version ?? null);
      return read?.value;
    },
    set: (did, value) =>
      noRefreshScope.exit(() =>
        locks.run(sessionLockName(did), async () => {
          const frame = heldLock(sessionLockName(did))!;
          const read = frame.versions.get(did);
          if (!versioned || read === undefined || read === null) {
            // Nothing read under this hold (a first login), or this holder deleted it (a
            // login replacing the previous session): a plain write.
            await store.set(did, value);
            frame.versions.delete(did);
            return;
          }
          const next = await versioned.setIfVersion(did, value, read);
          if (next === undefined) {
            frame.fenced.add(did);
            return fenced(did, 'set');
          }
          frame.versions.set(did, next);
        }),
      ),
    del: (did) =>
      noRefreshScope.exit(() =>
        locks.run(sessionLockName(did), async () => {
          const frame = heldLock(sessionLockName(did))!;
          const read = frame.versions.get(did);
          if (!versioned || read === undefined) {
            await store.del(did);
          } else if (read !== null && !(await versioned.delIfVersion(did, read))) {
            frame.fenced.add(did);
            return fenced(did, 'del');
          }
          frame.versions.set(did, null);
          frame.deleted.add(did);
        }),
      ),
  };
}
