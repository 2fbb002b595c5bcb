import { AtProtoStoreError } from '../errors/at-proto-store.error.js';

// Session versions (see AtProtoVersionedSessionStore). A write that replaces a session
// gives it the stored version + 1. A write that creates one (a first login, or a login
// after the session was deleted) cannot continue the deleted row's count, which is gone;
// restarting at 1 would let a stale lock holder that read version 1 of the deleted session
// overwrite the new login's session (the ABA problem). So a new session starts at the
// store clock in whole seconds since 2025-01-01: later than every version the deleted
// session could have reached, since no session is written more than once a second for
// long (logins and refreshes are seconds to minutes apart). It fits the `int` column
// (2^31 - 1 seconds) until 2093.
const VERSION_EPOCH_MS = Date.UTC(2025, 0, 1);

/**
 * The version of a session that a write creates at `nowMs` (store clock).
 * @internal
 */
export function firstSessionVersion(nowMs: number): number {
  return Math.max(1, Math.floor((nowMs - VERSION_EPOCH_MS) / 1000));
}

/**
 * Throws unless `version` is a version as `getVersioned` resolves it (a non-negative
 * integer; 0 is a Redis value written before versions existed).
 * @internal
 */
export function assertSessionVersion(version: unknown): asserts version is number {
  if (!Number.isSafeInteger(version) || (version as number) < 0) {
    throw new AtProtoStoreError(
      `A session version is a non-negative integer, as getVersioned() resolves it; got ${typeof version === 'number' ? String(version) : typeof version}.`,
    );
  }
}
