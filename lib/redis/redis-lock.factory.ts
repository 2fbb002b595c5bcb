import { Logger } from '@nestjs/common';
import {
  DEFAULT_LOCK_COMMAND_TIMEOUT_MS,
  RedlockRequestLock,
  type RedisEvalClient,
  type RedlockLike,
  type RedlockRequestLockOptions,
  type RedlockSettings,
} from '../lock/redlock-request-lock.js';
import { describeError } from '../errors/describe-error.js';
import type { RedisCommandClient } from '../storage/redis/redis-client.js';
import { loadOptional } from './optional-dependency.js';
import type { ClosableRedis } from './redis-shutdown.js';

/**
 * The `commandTimeout` of the lock connection (1.5 s): a command Redis has not answered by
 * then rejects with "Command timed out", so that a stalled Redis (connected but silent)
 * cannot hang the session lock, the Redis stores or the Redis OAuth caches, which share
 * this connection. The lock races its own commands against the same bound.
 * @internal
 */
export const LOCK_COMMAND_TIMEOUT_MS = DEFAULT_LOCK_COMMAND_TIMEOUT_MS;

/** The ioredis client shape this module uses (closed with `closeRedisClient`). @internal */
export interface RedisClientLike extends RedisCommandClient, RedisEvalClient, ClosableRedis {
  readonly status: string;
  quit(): Promise<unknown>;
  disconnect(): void;
  on(event: 'error', listener: (error: unknown) => void): unknown;
  once(event: 'ready' | 'error' | 'end', listener: (arg?: unknown) => void): unknown;
}

type RedisConstructor = new (url: string, options: Record<string, unknown>) => RedisClientLike;
type RedlockConstructor = new (
  clients: Iterable<unknown>,
  settings: RedlockSettings,
) => RedlockLike;

/**
 * A Redis connection for the session lock (and the Redis stores and caches, which share
 * it): it fails fast instead of queueing commands while disconnected (a request must get a
 * clear 503, not hang), gives up on a command Redis does not answer within
 * `commandTimeoutMs` ({@link LOCK_COMMAND_TIMEOUT_MS} by default), and keeps reconnecting
 * in the background. BullMQ gets its own connections, which need the opposite settings
 * (its workers block on purpose).
 * @internal
 */
export async function createLockConnection(
  url: string,
  options: { commandTimeoutMs?: number } = {},
): Promise<RedisClientLike> {
  const { Redis } = await loadOptional<{ Redis: RedisConstructor }>('ioredis', 'The redis option');
  const logger = new Logger('AtProtoRedis');
  let lastError = '';
  const client = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    commandTimeout: options.commandTimeoutMs ?? LOCK_COMMAND_TIMEOUT_MS,
    retryStrategy: (times: number) => Math.min(times * 200, 2000),
  });
  client.on('error', (error: unknown) => {
    // ioredis repeats the same error on every reconnection attempt: log changes only.
    const text = describeError(error);
    if (text !== lastError) logger.warn(`Lock connection: ${text}`);
    lastError = text;
  });
  // Give the first connection a moment, so that the first requests do not fail while it is
  // being made. A Redis that is down at boot does not stop the app: requests that need no
  // refresh keep working, the others get a 503 until it is back.
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 2000);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', done);
    client.once('error', done);
  });
  return client;
}

/**
 * The module's distributed session lock on `client` (made by {@link createLockConnection}):
 * its keys under `<keyPrefix>lock:`, failed extensions re-asserted through `client`, each
 * command bounded by {@link LOCK_COMMAND_TIMEOUT_MS}. `overrides` are for tests.
 * @internal
 */
export async function createRedlockRequestLock(
  client: RedisClientLike,
  keyPrefix = 'atproto:',
  overrides: Pick<RedlockRequestLockOptions, 'ttlMs' | 'acquireTimeoutMs' | 'retryDelayMs'> = {},
): Promise<RedlockRequestLock> {
  const { default: Redlock } = await loadOptional<{ default: RedlockConstructor }>(
    'redlock',
    'The redis option (distributed session lock)',
    // `npm install redlock` gets 4.x, whose API differs.
    'redlock@5.0.0-beta.2',
  );
  return new RedlockRequestLock((settings) => new Redlock([client], settings), {
    ...overrides,
    isAvailable: () => client.status === 'ready',
    keyPrefix: `${keyPrefix}lock:`,
    redis: client,
    commandTimeoutMs: LOCK_COMMAND_TIMEOUT_MS,
  });
}
