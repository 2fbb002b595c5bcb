/**
 * How long a shutdown waits on Redis for each step of closing a connection (1 s): for the
 * answer to QUIT, for a connection attempt under way, then for the socket to close once
 * the module closed it. While Redis is down the steps take milliseconds (a refused
 * connection ends the client at once); the bound is for a Redis that is unreachable
 * without refusing (a dropped route) or connected but silent (stalled).
 * @internal
 */
export const REDIS_SHUTDOWN_STEP_MS = 1000;

/** The ioredis client members a shutdown uses (an ioredis `Redis` has them all). @internal */
export interface ClosableRedis {
  readonly status: string;
  /** ioredis reads `retryStrategy` from here each time a connection closes. */
  readonly options: { retryStrategy?: (times: number) => number | void | null };
  quit(): Promise<unknown>;
  disconnect(): void;
  connect(): Promise<unknown>;
  once(event: 'end' | 'ready', listener: () => void): unknown;
  removeListener(event: 'end' | 'ready', listener: () => void): unknown;
}

/**
 * Stops `client` from reconnecting: from now on a connection that closes or fails ends the
 * client (status `end`), and ioredis then rejects every command it still holds instead of
 * keeping them for a reconnection that a closing app would wait for.
 * @internal
 */
export function stopReconnecting(client: ClosableRedis): void {
  client.options.retryStrategy = () => null;
}

/**
 * Closes an ioredis client without waiting on Redis for more than a few
 * {@link REDIS_SHUTDOWN_STEP_MS} steps (two for a connected client: QUIT, then closing the
 * socket), and leaves nothing of it running: its reconnection stopped, its socket closed,
 * every command it held rejected (`Connection is closed.`).
 *
 * - Connected: QUIT (unless `quit` is false), so that Redis answers the commands sent
 *   before it; a QUIT left unanswered for a step is followed by `disconnect()`.
 * - Waiting to reconnect: ioredis 5 never ends a client disconnected in that state (no
 *   `end` event, its queued commands pending for ever: redis/ioredis#1247), so its wait is
 *   cleared and the attempt made now, with reconnection off: refused, it ends the client
 *   and rejects what it held; accepted (Redis is back), QUIT goes through as above.
 * - Connecting: given a step to connect (then QUIT) or to fail (which ends it).
 *
 * Never rejects.
 * @internal
 */
export async function closeRedisClient(
  client: ClosableRedis,
  { stepMs = REDIS_SHUTDOWN_STEP_MS, quit = true }: { stepMs?: number; quit?: boolean } = {},
): Promise<void> {
  stopReconnecting(client);
  // Read afresh each time: the status changes while this awaits.
  const status = (): string => client.status;
  if (status() === 'end') return;
  if (status() === 'wait') {
    // Never connected (lazyConnect): ioredis ends it at once.
    client.disconnect();
    return;
  }
  if (status() === 'reconnecting') {
    client.disconnect(); // clears the reconnection timer
    client.connect().catch(() => undefined); // a refusal ends it: see above
  }
  if (quit && status() !== 'ready') await until(client, ['ready', 'end'], stepMs);
  if (quit && status() === 'ready' && (await settlesWithin(client.quit(), stepMs))) {
    // Answered: Redis closes the connection, which ends the client.
    await until(client, ['end'], stepMs);
  }
  if (status() !== 'end') {
    // Closes the socket, which ends the client since it was closed on purpose. A socket
    // Redis does not close (stalled) is destroyed by ioredis after its disconnectTimeout.
    client.disconnect();
    await until(client, ['end'], stepMs);
  }
}

/** Whether `promise` settled (either way) within `ms`; never rejects. @internal */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  // A referenced timer: an unreferenced one could let the process exit mid-close, with
  // app.close() never resolved.
  const expired = new Promise<false>((resolve) => (timer = setTimeout(resolve, ms, false)));
  try {
    return await Promise.race([promise.then(settled, settled), expired]);
  } finally {
    clearTimeout(timer);
  }
}

const settled = (): true => true;

/** Resolves once `client` reaches one of `statuses` (or `ms` passed). */
async function until(
  client: ClosableRedis,
  statuses: Array<'ready' | 'end'>,
  ms: number,
): Promise<void> {
  if ((statuses as string[]).includes(client.status)) return;
  let reached: () => void = () => undefined;
  const event = new Promise<void>((resolve) => (reached = resolve));
  for (const status of statuses) client.once(status, reached);
  try {
    await settlesWithin(event, ms);
  } finally {
    for (const status of statuses) client.removeListener(status, reached);
  }
}
