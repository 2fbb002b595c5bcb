/**
 * The few Redis commands the Redis stores and caches send, as ioredis 5 declares them: an
 * ioredis `Redis` (or `Cluster`) client satisfies it as is. The library never imports
 * ioredis itself: it stays an optional dependency, and the app (or the module, when its
 * `redis` option is set) creates and owns the connection.
 * @publicApi
 */
export interface RedisCommandClient {
  /** `GET key`: the value, or `null` when there is none. */
  get(key: string): Promise<string | null>;
  /** `SET key value PX milliseconds`. */
  set(key: string, value: string, expiryMode: 'PX', milliseconds: number): Promise<unknown>;
  /** `DEL key`. */
  del(key: string): Promise<number>;
}

/**
 * Checks a key prefix given to a Redis store or cache: printable ASCII without spaces
 * (it is part of every key, and of the ciphertexts' associated data).
 * @internal
 */
export function assertValidKeyPrefix(prefix: unknown, what: string): asserts prefix is string {
  if (typeof prefix !== 'string' || prefix.length > 128 || !/^[\x21-\x7e]*$/.test(prefix)) {
    throw new TypeError(
      `${what}: keyPrefix must be at most 128 printable ASCII characters without spaces, ` +
        `e.g. 'atproto:' or 'myapp:atproto:'.`,
    );
  }
}

/**
 * {@link RedisCommandClient} plus `EVAL`, which the Redis session store needs: its writes
 * compare and replace a session's version atomically in a Lua script. An ioredis `Redis`
 * (or `Cluster`) client satisfies it as is.
 * @publicApi
 */
export interface RedisScriptingClient extends RedisCommandClient {
  /** `EVAL script numkeys key... arg...`: the script's reply. */
  eval(script: string, numKeys: number, ...keysAndArgs: (string | number)[]): Promise<unknown>;
}
