import { loadOptional } from '../redis/optional-dependency.js';

/**
 * The ioredis client shape the invalidation subscriber uses.
 * @internal
 */
export interface SubscriberLike {
  readonly status: string;
  subscribe(channel: string): Promise<unknown>;
  on(event: 'message', listener: (channel: string, message: string) => void): unknown;
  on(event: 'ready' | 'close' | 'end' | 'reconnecting', listener: () => void): unknown;
  on(event: 'error', listener: (error: unknown) => void): unknown;
  quit(): Promise<unknown>;
  disconnect(reconnect?: boolean): void;
}

type RedisConstructor = new (url: string, options: Record<string, unknown>) => SubscriberLike;

/**
 * The connection the invalidation channel is received on, separate from the lock's: a
 * connection in subscriber mode can send nothing else, and it needs other settings.
 * - No `commandTimeout`: it sends no commands after SUBSCRIBE, so a timeout would never
 *   fire; the heartbeat watches it instead.
 * - No automatic resubscription: the module subscribes itself on every `ready`, so that it
 *   knows from when messages reach it again (what was published before is lost).
 * - Reconnects quickly (at most 1 s apart) and gives a half-open socket 500 ms to close.
 * @internal
 */
export async function createSubscriberConnection(url: string): Promise<SubscriberLike> {
  const { Redis } = await loadOptional<{ Redis: RedisConstructor }>(
    'ioredis',
    'The redis option (cache invalidation channel)',
  );
  return new Redis(url, {
    autoResubscribe: false,
    maxRetriesPerRequest: null,
    connectTimeout: 2000,
    disconnectTimeout: 500,
    retryStrategy: (times: number) => Math.min(times * 100, 1000),
    connectionName: 'atproto-invalidation',
  });
}
