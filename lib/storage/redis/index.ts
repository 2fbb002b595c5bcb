// The Redis backend: OAuth state and session stores, and the OAuth client's caches. Nothing
// here imports ioredis: pass a client you created (see RedisCommandClient).
export type { RedisCommandClient, RedisScriptingClient } from './redis-client.js';
export { RedisSessionStore, RedisStateStore, type RedisStoreOptions } from './redis.stores.js';
export {
  createRedisOAuthCaches,
  REDIS_OAUTH_CACHE_TTL_MS,
  type RedisOAuthCaches,
  type RedisOAuthCachesOptions,
} from './redis-caches.js';
