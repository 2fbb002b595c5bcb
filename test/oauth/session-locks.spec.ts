/**
 * The module's view of the session lock: re-entrant within one async context, held across a
 * login's whole replacement, and never "held" by work that merely started under the lock
 * and goes on after it was released (an event subscriber, a timer): such work must take the
 * lock like anyone else, and may not refresh without it. And the store the OAuth client
 * writes through: a holder that lost its lock never overwrites, deletes or re-creates a
 * newer session, and never throws at the client for it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type AtProtoLockLease,
  AtProtoLockError,
  LocalRequestLock,
  MemorySessionStore,
} from 'nestjs-atproto-auth';
import { sessionLockName } from '../../lib/lock/lock-scope.js';
import {
  assertRefreshMayStart,
  fencedSessionStore,
  heldLock,
  SessionLocks,
} from '../../lib/oauth/session-locks.js';
import { randomDid, sessionValue } from '../support/raw-sql.js';

const NAME = '@atproto-oauth-client-did:plc:aaaaaaaaaaaaaaaaaaaaaaaa';
const refresh = new Request('https://as.example/token', { method: 'POST' });
const refreshBody = 'grant_type=refresh_token&refresh_token=x';

/** A local lock that counts how many holders of a name it has at once. */
function countingLock(acquireTimeoutMs = 1000) {
  const lock = new LocalRequestLock({ acquireTimeoutMs });
  let holders = 0;
  let most = 0;
  const run = lock.run.bind(lock);
  lock.run = ((name: string, fn: (lease: AtProtoLockLease) => unknown) =>
    run(name, async (lease: AtProtoLockLease) => {
      most = Math.max(most, ++holders);
      try {
        return await fn(lease);
      } finally {
        holders--;
      }
    })) as typeof lock.run;
  return { lock, most: () => most };
}

it('is re-entrant within the holder, and refreshes may start under it', async () => {
  const locks = new SessionLocks(new LocalRequestLock({ acquireTimeoutMs: 500 }));
  await locks.run(NAME, async () => {
    expect(heldLock(NAME)).toBeDefined();
    await locks.run(NAME, async () => {
      expect(() => assertRefreshMayStart(refresh, refreshBody, 1000)).not.toThrow();
    });
  });
  expect(heldLock(NAME)).toBeUndefined();
  expect(() => assertRefreshMayStart(refresh, refreshBody, 1000)).toThrow(AtProtoLockError);
});

it('work started under the lock and still running after it takes the lock anew', async () => {
  const { lock, most } = countingLock();
  const locks = new SessionLocks(lock);
  let leaked: Promise<void> | undefined;
  let refreshRefused = false;
  await locks.run(NAME, async () => {
    // e.g. an event subscriber doing async work, started from inside the lock
    leaked = (async () => {
      await sleep(50);
      expect(heldLock(NAME)).toBeUndefined();
      try {
        assertRefreshMayStart(refresh, refreshBody, 1000);
      } catch (error) {
        refreshRefused = error instanceof AtProtoLockError;
      }
      await locks.run(NAME, () => sleep(100));
    })();
  });
  // Another holder meanwhile: never two at once.
  await sleep(60);
  await locks.run(NAME, () => sleep(50));
  await leaked;
  expect(refreshRefused).toBe(true);
  expect(most()).toBe(1);
});

it('after a login hold has ended, work started inside it does not keep a lock forever', async () => {
  const locks = new SessionLocks(new LocalRequestLock({ acquireTimeoutMs: 1000 }));
  let leaked: Promise<void> | undefined;
  await locks.holdUntilDone(async () => {
    await locks.run(NAME, async () => undefined);
    leaked = (async () => {
      await sleep(50);
      await locks.run('@atproto-oauth-client-did:plc:bbbbbbbbbbbbbbbbbbbbbbbb', () => sleep(10));
      await locks.run(NAME, () => sleep(10));
    })();
  });
  await leaked;
  // Both names are free again.
  await locks.run(NAME, async () => undefined);
  await locks.run('@atproto-oauth-client-did:plc:bbbbbbbbbbbbbbbbbbbbbbbb', async () => undefined);
});

it('parallel uses of one name inside a login hold share one acquisition', async () => {
  const locks = new SessionLocks(new LocalRequestLock({ acquireTimeoutMs: 1000 }));
  await locks.holdUntilDone(async () => {
    await Promise.all([
      locks.run(NAME, () => sleep(20)),
      locks.run(NAME, () => sleep(20)),
      locks.run(NAME, () => sleep(20)),
    ]);
  });
});

it('once a lock of a login hold could not be taken, later uses fail at once', async () => {
  const lock = new LocalRequestLock({ acquireTimeoutMs: 300 });
  const locks = new SessionLocks(lock);
  let release!: () => void;
  const busy = lock.run(NAME, () => new Promise<void>((r) => (release = r)));
  const started = Date.now();
  await expect(
    locks.holdUntilDone(async () => {
      await locks.run(NAME, async () => undefined).catch(() => undefined); // swallowed, as the client does
      await locks.run(NAME, async () => undefined);
    }),
  ).rejects.toBeInstanceOf(AtProtoLockError);
  expect(Date.now() - started).toBeLessThan(300 + 250);
  release();
  await busy;
});

it('a use started inside a login hold that is granted after the hold ended holds the lock for real', async () => {
  const lock = new LocalRequestLock({ acquireTimeoutMs: 2000 });
  const locks = new SessionLocks(lock);
  let releaseOther!: () => void;
  const other = lock.run(NAME, () => new Promise<void>((r) => (releaseOther = r)));
  await sleep(10);
  let detachedRunning = false;
  let detached!: Promise<boolean>;
  await locks.holdUntilDone(async () => {
    // Fire-and-forget work inside the hold, waiting behind another holder...
    detached = locks.run(NAME, async () => {
      detachedRunning = true;
      await sleep(50);
      detachedRunning = false;
      return heldLock(NAME) !== undefined;
    });
    setTimeout(() => releaseOther(), 100);
    await sleep(20);
  }); // ...while the hold ends.
  await other;
  // Someone else asks for the lock: not while the detached work runs.
  let overlap: boolean | undefined;
  await lock.run(NAME, () => {
    overlap = detachedRunning;
  });
  expect(await detached).toBe(true);
  expect(overlap).toBe(false);
});

describe('the fenced session store the OAuth client writes through', () => {
  const setup = () => {
    const store = new MemorySessionStore({ ttlMs: 3_600_000 });
    const locks = new SessionLocks(new LocalRequestLock({ acquireTimeoutMs: 1000 }));
    const fenced: string[] = [];
    const client = fencedSessionStore(store, locks, (_did, op) => fenced.push(op));
    return { store, locks, fenced, client };
  };

  it('refuses, without throwing, a write by a holder whose session changed since it read it', async () => {
    const { store, locks, fenced, client } = setup();
    const did = randomDid();
    await store.set(did, sessionValue(did, { refreshToken: 'R1' }));
    await locks.run(sessionLockName(did), async () => {
      await client.get(did); // read under the lock: version noted
      // Meanwhile (this holder lost its lock) another instance refreshed.
      await store.set(did, sessionValue(did, { refreshToken: 'R2' }));
      await expect(
        client.set(did, sessionValue(did, { refreshToken: 'R-stale' })),
      ).resolves.toBeUndefined();
      await expect(client.del(did)).resolves.toBeUndefined();
    });
    expect((await store.get(did))?.tokenSet.refresh_token).toBe('R2');
    expect(fenced).toEqual(['set', 'del']);
  });

  it('never re-creates a session deleted since it was read', async () => {
    const { store, locks, fenced, client } = setup();
    const did = randomDid();
    await store.set(did, sessionValue(did));
    await locks.run(sessionLockName(did), async () => {
      await client.get(did);
      await store.del(did); // a logout elsewhere
      await client.set(did, sessionValue(did, { refreshToken: 'R-late' }));
    });
    expect(await store.get(did)).toBeUndefined();
    expect(fenced).toEqual(['set']);
  });

  it('lets the holder write what it read, and a login replace the session it deleted', async () => {
    const { store, locks, fenced, client } = setup();
    const did = randomDid();
    await store.set(did, sessionValue(did, { refreshToken: 'R1' }));
    await locks.run(sessionLockName(did), async () => {
      await client.get(did);
      await client.set(did, sessionValue(did, { refreshToken: 'R2' })); // a refresh
      await client.set(did, sessionValue(did, { refreshToken: 'R3' })); // and another
    });
    expect((await store.get(did))?.tokenSet.refresh_token).toBe('R3');
    await locks.holdUntilDone(async () => {
      await locks.run(sessionLockName(did), async () => {
        await client.get(did);
        await client.del(did); // the previous session, revoked
      });
      await client.set(did, sessionValue(did, { refreshToken: 'NEW' })); // the new login
    });
    expect((await store.get(did))?.tokenSet.refresh_token).toBe('NEW');
    expect(fenced).toEqual([]);
  });
});
