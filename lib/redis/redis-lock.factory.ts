import { Logger } from '@nestjs/common';
import {
  RedlockRequestLock,
  type RedlockLike,
  type RedlockSettings,
} from '../lock/redlock-request-lock.js';
import { describeError } from '../errors/describe-error.js';
import type { RedisCommandClient } from '../storage/redis/redis-client.js';
import { loadOptional } from './optional-dependency.js';

/** The ioredis client shape this module uses. @internal */
export interface RedisClientLike extends RedisCommandClient {
  readonly status: string;
  quit(): Promise<unknown>;
  disconnect(): void;
  on(event: 'error', listener: (error: unknown) => void): unknown;
  once(event: 'ready' | 'error', listener: (arg?: unknown) => void): unknown;
}

type RedisConstructor = new (url: string, options: Record<string, unknown>) => RedisClientLike;
type RedlockConstructor = new (
  clients: Iterable<unknown>,
  settings: RedlockSettings,
) => RedlockLike;

/**
 * A Redis connection for the session lock: it fails fast instead of queueing commands while
 * disconnected (a request must get a clear 503, not hang), and keeps reconnecting in the
 * background. BullMQ gets its own connection, which needs the opposite settings.
 * @internal
 */
export async function createLockConnection(url: string): Promise<RedisClientLike> {
  const { Redis } = await loadOptional<{ Redis: RedisConstructor }>('ioredis', 'The redis option');
  const logger = new Logger('AtProtoRedis');
  let lastError = '';
  const client = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
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

/** @internal */
export async function createRedlockRequestLock(
  client: RedisClientLike,
  keyPrefix = 'atproto:',
): Promise<RedlockRequestLock> {
  const { default: Redlock } = await loadOptional<{ default: RedlockConstructor }>(
    'redlock',
    'The redis option (distributed session lock)',
  );
  return new RedlockRequestLock((settings) => new Redlock([client], settings), {
    isAvailable: () => client.status === 'ready',
    keyPrefix: `${keyPrefix}lock:`,
  });
}
