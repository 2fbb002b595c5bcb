import { AsyncLocalStorage } from 'node:async_hooks';
import { Logger } from '@nestjs/common';
import { describeError } from '../errors/describe-error.js';
import { noRefreshScope, sessionLockName } from '../lock/lock-scope.js';
import { oauthPhase } from './oauth-phase.js';
import { assertExpectedAccount, loginExpectation } from './login-expectation.js';
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
  /**
   * Whether the lock is still held. The frame lives in an async context, which work started
   * under the lock (an event subscriber, a timer) keeps after the lock is released: such
   * work must not take itself for the holder.
   */
  active: boolean;
}

/** What a {@link SessionLocks.holdUntilDone} context keeps until it ends. */
interface KeptLocks {
  /** Locks being taken or held, by name (parallel uses of a name share one acquisition). */
  readonly acquiring: Map<string, Promise<void>>;
  readonly releases: Array<() => Promise<void>>;
  /** The first failure to take a lock: later uses in this hold fail at once with it. */
  failure?: unknown;
  ended: boolean;
}

interface LockContext {
  readonly frames: Map<string, LockFrame>;
  readonly kept?: KeptLocks;
}

const lockContext = new AsyncLocalStorage<LockContext>();

function newFrame(lease: AtProtoLockLease): LockFrame {
  return { lease, versions: new Map(), deleted: new Set(), fenced: new Set(), active: true };
}

/** The frame of lock `name` if the current async context holds it (still). @internal */
export function heldLock(name: string): LockFrame | undefined {
  const frame = lockContext.getStore()?.frames.get(name);
  return frame?.active ? frame : undefined;
}

/**
 * Runs `fn` outside every lock context and no-refresh scope: for event listeners, which
 * may start work that outlives the lock.
 * @internal
 */
export function outsideLocks<T>(fn: () => T): T {
  return noRefreshScope.exit(() =>
    lockContext.exit(() => oauthPhase.exit(() => loginExpectation.exit(fn))),
  );
}

/**
 * The module's view of the session lock, over whichever {@link AtProtoRequestLock} is in use.
 *
 * - **Re-entrant** within one async context: a holder that calls the OAuth client (whose
 *   own reads take the same lock, e.g. `client.revoke()` reads through `getSession`) must
 *   not wait for itself. Only while the lock is held: work started under it that goes on
 *   after the release takes the lock again like anyone else.
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
    if (context?.frames.get(name)?.active) return fn();
    // A read that cannot refresh (see lock/lock-scope.ts): the lock lets it through without
    // taking anything, so nothing is recorded as held.
    if (noRefreshScope.getStore()?.lockName === name) return this.lock.run(name, () => fn());
    if (context?.kept && !context.kept.ended) {
      await this.#keep(context as Required<LockContext>, name);
      if (context.frames.get(name)?.active) return fn();
      // The hold ended while this waited: take the lock for this call alone, below.
    }
    return this.lock.run(name, async (lease) => {
      const frames = new Map(context?.frames ?? []);
      const frame = newFrame(lease);
      frames.set(name, frame);
      try {
        return await lockContext.run({ frames }, fn);
      } finally {
        frame.active = false;
      }
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
    const kept: KeptLocks = { acquiring: new Map(), releases: [], ended: false };
    const context: LockContext = { frames: new Map(lockContext.getStore()?.frames ?? []), kept };
    try {
      return await lockContext.run(context, fn);
    } finally {
      kept.ended = true;
      for (const [name] of kept.acquiring) {
        const frame = context.frames.get(name);
        if (frame) frame.active = false;
      }
      await Promise.all(kept.releases.map((release) => release()));
    }
  }

  async #keep(context: Required<LockContext>, name: string): Promise<void> {
    const { kept } = context;
    // The client swallows some errors (its revoke of the previous session inside
    // callback()): without this, every later use would wait out the lock's deadline again.
    if (kept.failure !== undefined) throw kept.failure;
    let acquiring = kept.acquiring.get(name);
    if (!acquiring) {
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let held!: (lease: AtProtoLockLease) => void;
      const acquired = new Promise<AtProtoLockLease>((resolve) => (held = resolve));
      const done = this.lock.run(name, (lease) => {
        held(lease);
        return released;
      });
      kept.releases.push(async () => {
        release();
        await done.catch(() => undefined);
      });
      acquiring = Promise.race([acquired, done.then(() => acquired)]).then(
        (lease) => {
          // Acquired after the hold ended (work started inside it): it is being released.
          if (!kept.ended) context.frames.set(name, newFrame(lease));
        },
        (error: unknown) => {
          kept.failure ??= error;
          throw error;
        },
      );
      kept.acquiring.set(name, acquiring);
    }
    await acquiring;
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
    .filter(([name, frame]) => frame.active && name.startsWith(sessionLockName('')))
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
      assertExpectedAccount(did);
      const scope = noRefreshScope.getStore();
      if (scope && scope.did === did) return scope.session;
      const frame = heldLock(sessionLockName(did));
      if (!frame || !versioned) return store.get(did);
      const read = await versioned.getVersioned(did);
      frame.versions.set(did, read?.version ?? null);
      return read?.value;
    },
    set: async (did, value) => {
      assertExpectedAccount(did);
      return noRefreshScope.exit(() =>
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
      );
    },
    del: async (did) => {
      assertExpectedAccount(did);
      return noRefreshScope.exit(() =>
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
      );
    },
  };
}
