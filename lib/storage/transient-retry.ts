import { setTimeout as sleep } from 'node:timers/promises';
import { AtProtoStoreError } from '../errors/at-proto-store.error.js';

/**
 * How a store retries database operations that failed for a transient reason.
 * @publicApi
 */
export interface TransientRetryOptions {
  /** Attempts in all, the first included. @default 6 */
  maxAttempts?: number;
  /** Delay before the first retry, doubled after each (with jitter). @default 50 */
  baseDelayMs?: number;
  /** Longest delay between two attempts. @default 1000 */
  maxDelayMs?: number;
  /**
   * Time budget for all attempts: no retry starts after it. It bounds how long a refresh
   * can hold the session lock. @default 5000
   */
  maxElapsedMs?: number;
  /**
   * Called after an attempt failed with a transient error, just before the store waits and
   * retries it (not when the error escapes). For metrics and logs: `attempt` is the number
   * of the attempt that failed (1 for the first). Errors it throws are ignored, so that an
   * observer can never turn a retried write into a failed one.
   */
  onRetry?: (error: unknown, attempt: number) => void;
}

const DEFAULTS: Required<Omit<TransientRetryOptions, 'onRetry'>> = {
  maxAttempts: 6,
  baseDelayMs: 50,
  maxDelayMs: 1000,
  maxElapsedMs: 5000,
};

// SQLSTATE classes/codes (PostgreSQL), MySQL/MariaDB error numbers and driver codes, and
// SQLite result codes that mean "the same statement may well succeed if run again".
const PG_TRANSIENT = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available (lock_timeout)
  '57014', // query_canceled (statement_timeout)
  '57P01', // admin_shutdown (backend terminated)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '08000',
  '08001',
  '08003',
  '08004',
  '08006', // connection exceptions
  '25006', // read_only_sql_transaction (failover to a replica in progress)
]);
const MYSQL_TRANSIENT_ERRNO = new Set([
  1205, // ER_LOCK_WAIT_TIMEOUT
  1213, // ER_LOCK_DEADLOCK
  1040, // ER_CON_COUNT_ERROR
  1053, // ER_SERVER_SHUTDOWN
  1927, // ER_CONNECTION_KILLED (MariaDB)
  2006, // CR_SERVER_GONE_ERROR
  2013, // CR_SERVER_LOST
  1290, // ER_OPTION_PREVENTS_STATEMENT (read-only during failover)
  3572, // ER_LOCK_NOWAIT
]);
const NODE_TRANSIENT = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'SQLITE_BUSY',
  'SQLITE_BUSY_SNAPSHOT',
  'SQLITE_BUSY_RECOVERY',
  'SQLITE_LOCKED',
  'SQLITE_LOCKED_SHAREDCACHE',
]);
const TRANSIENT_MESSAGES =
  /Connection terminated|connection timeout|Connection lost|server closed the connection|Client has encountered a connection error|terminating connection/i;
// Redis (the Redis stores): ioredis' own errors while the connection is down, reconnecting
// or offline (exact messages, case-sensitive), and server replies that mean "try again
// shortly" (loading after a restart, failover to a replica, cluster resharding, a busy
// script), recognized only on ioredis' ReplyError by their leading error code.
const REDIS_TRANSIENT_NAMES = new Set(['MaxRetriesPerRequestError']);
const REDIS_TRANSIENT_MESSAGES =
  /^(?:Connection is closed\.|Stream isn't writeable and enableOfflineQueue options is false|Cluster isn't ready and enableOfflineQueue options is false|Cluster is disconnected\.|None of startup nodes is available|Command timed out|Socket timeout\. )/;
const REDIS_TRANSIENT_REPLIES =
  /^(?:LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|READONLY|NOREPLICAS) /;

/**
 * Whether an error thrown by a database driver (directly or wrapped in TypeORM's
 * `QueryFailedError`) is transient: a lock timeout, deadlock, serialization failure,
 * lost connection or busy database. Also recognizes ioredis' errors for a lost, offline
 * or reconnecting connection and Redis' "try again" replies (LOADING, READONLY, ...).
 * @publicApi
 */
export function isTransientDatabaseError(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e && typeof e === 'object' && depth < 4; depth++) {
    const { code, errno, message, name } = e as {
      code?: unknown;
      errno?: unknown;
      message?: unknown;
      name?: unknown;
    };
    if (typeof code === 'string' && (PG_TRANSIENT.has(code) || NODE_TRANSIENT.has(code)))
      return true;
    if (typeof errno === 'number' && MYSQL_TRANSIENT_ERRNO.has(errno)) return true;
    if (typeof message === 'string' && TRANSIENT_MESSAGES.test(message)) return true;
    if (typeof name === 'string' && REDIS_TRANSIENT_NAMES.has(name)) return true;
    if (typeof message === 'string' && REDIS_TRANSIENT_MESSAGES.test(message)) return true;
    if (
      name === 'ReplyError' &&
      typeof message === 'string' &&
      REDIS_TRANSIENT_REPLIES.test(message)
    )
      return true;
    e =
      (e as { driverError?: unknown; cause?: unknown }).driverError ??
      (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * Runs `operation`, retrying it with exponential backoff and jitter while it fails with a
 * transient database error, within a bounded number of attempts and time. A non-transient
 * error is thrown at once; a transient one that outlives the budget is wrapped in an
 * {@link AtProtoStoreError} whose message says what was attempted.
 * @internal
 */
export async function withTransientRetry<T>(
  what: string,
  operation: () => Promise<T>,
  options: TransientRetryOptions = {},
): Promise<T> {
  const { maxAttempts, baseDelayMs, maxDelayMs, maxElapsedMs, onRetry } = {
    ...DEFAULTS,
    ...options,
  };
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      if (!isTransientDatabaseError(error)) throw error;
      const delay =
        Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      const elapsed = Date.now() - started;
      if (attempt >= maxAttempts || elapsed + delay > maxElapsedMs) {
        throw new AtProtoStoreError(
          `${what} failed after ${attempt} attempt${attempt === 1 ? '' : 's'} over ${elapsed} ms ` +
            `with transient database errors (lock timeouts, deadlocks or lost connections). ` +
            `Check the database's health and load; the last error is the cause.`,
          { cause: error },
        );
      }
      try {
        onRetry?.(error, attempt);
      } catch {
        // An observer's bug must not fail the write it observes (see TransientRetryOptions).
      }
      await sleep(delay);
    }
  }
}
