import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationShutdown,
  type Provider,
} from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import type { NodeOAuthClient } from '@atproto/oauth-client-node';
import type { DataSource } from 'typeorm';
import {
  AT_PROTO_APP_SESSION_STORE,
  AT_PROTO_DATA_SOURCE,
  AT_PROTO_MODULE_EXTRAS,
  AT_PROTO_OAUTH_CLIENT,
  AT_PROTO_OPTIONS,
  AT_PROTO_SESSION_STORE,
  AT_PROTO_STATE_STORE,
} from './at-proto.constants.js';
import {
  AT_PROTO_CLEANUP_TARGET,
  AT_PROTO_LOCK_CONNECTION,
  AT_PROTO_STORES,
} from './at-proto.internal-constants.js';
import { AT_PROTO_RAW_OPTIONS } from './at-proto.module-definition.js';
import { AtProtoCleanupService } from './cleanup/at-proto-cleanup.service.js';
import { AT_PROTO_API_KEY_STORE } from './api-keys/api-key.constants.js';
import { AtProtoApiKeyService } from './api-keys/api-key.service.js';
import type { AtProtoApiKeyStore } from './api-keys/api-key.store.js';
import { atProtoNativeProviders } from './native/native.providers.js';
import { ScopeRoutesCheck } from './scopes/scope-routes.check.js';
import { MemoryApiKeyStore } from './storage/memory/memory-api-key.store.js';
import { TypeOrmApiKeyStore } from './storage/typeorm/typeorm-api-key.store.js';
import type { CleanupTarget } from './cleanup/cleanup.interface.js';
import { MemoryCleanupTarget } from './cleanup/memory-cleanup.target.js';
import { TypeOrmCleanupTarget } from './cleanup/typeorm-cleanup.target.js';
import { installKeyRing } from './crypto/key-ring.registry.js';
import {
  createLockConnection,
  createRedlockRequestLock,
  type RedisClientLike,
} from './redis/redis-lock.factory.js';
import { AtProtoConfigError } from './errors/at-proto-config.error.js';
import { AtProtoEvents } from './events/at-proto-events.js';
import { AtProtoExceptionFilter } from './filters/at-proto-exception.filter.js';
import { AtProtoAuthGuard } from './guards/at-proto-auth.guard.js';
import { AtProtoRequestLock, LocalRequestLock } from './lock/request-lock.js';
import { AtProtoAuthService } from './oauth/at-proto-auth.service.js';
import { createOAuthClient } from './oauth/oauth-client.factory.js';
import { SessionLocks } from './oauth/session-locks.js';
import { AtProtoHttpAdapterCheck } from './http/http-adapter.check.js';
import { AtProtoCacheInvalidation } from './invalidation/cache-invalidation.js';
import type {
  AtProtoModuleExtras,
  AtProtoModuleOptions,
} from './options/at-proto-options.interface.js';
import { resolveAtProtoOptions } from './options/resolve-at-proto-options.js';
import type { ResolvedAtProtoOptions } from './options/resolved-options.js';
import { AppSessionService } from './session/app-session.service.js';
import { AtProtoServiceAuthService } from './service-auth/service-auth.service.js';
import { AT_PROTO_BOT_SESSION_STORE } from './bots/bot.constants.js';
import { AtProtoBotSessionService } from './bots/bot-session.service.js';
import { MemoryBotSessionStore, TypeOrmBotSessionStore } from './bots/bot-session.store.js';
import { ServiceDidDocumentRoute } from './service-auth/service-did-document.js';
import { AtProtoServiceJwtVerifier } from './service-auth/service-jwt-verifier.js';
import {
  MemoryAppSessionStore,
  MemorySessionStore,
  MemoryStateStore,
} from './storage/memory/memory.stores.js';
import type {
  AppSessionStore,
  AtProtoSessionStore,
  AtProtoStateStore,
} from './storage/store.interface.js';
import { TypeOrmAppSessionStore } from './storage/typeorm/typeorm-app-session.store.js';
import { TypeOrmSessionStore } from './storage/typeorm/typeorm-session.store.js';
import { TypeOrmStateStore } from './storage/typeorm/typeorm-state.store.js';
import { createRedisOAuthCaches } from './storage/redis/redis-caches.js';
import { RedisSessionStore, RedisStateStore } from './storage/redis/redis.stores.js';

/** Closes the module's Redis connections when the app shuts down. */
@Injectable()
export class RedisShutdown implements OnApplicationShutdown {
  constructor(@Inject(AT_PROTO_LOCK_CONNECTION) private readonly lock: RedisClientLike | null) {}
  async onApplicationShutdown(): Promise<void> {
    await this.lock?.quit().catch(() => this.lock?.disconnect());
  }
}

/** The three stores and their cleanup, built together from one storage choice. */
interface Stores {
  state: AtProtoStateStore;
  session: AtProtoSessionStore;
  app: AppSessionStore;
  apiKeys: AtProtoApiKeyStore;
  cleanup: CleanupTarget;
}

/**
 * Everything `AtProtoModule` provides, wired from its validated options: the options
 * themselves, the stores (TypeORM, memory or Redis), the lock, the OAuth client, the
 * services, the guard, the exception filter and interceptor.
 * @internal
 */
export const atProtoProviders: Provider[] = [
  AtProtoHttpAdapterCheck,
  {
    provide: AT_PROTO_OPTIONS,
    inject: [AT_PROTO_RAW_OPTIONS, AT_PROTO_MODULE_EXTRAS],
    useFactory: async (raw: AtProtoModuleOptions, extras: AtProtoModuleExtras) => {
      const resolved = await resolveAtProtoOptions(raw, extras);
      // Encrypted entity columns find the ring here (see crypto/key-ring.registry.ts).
      installKeyRing(resolved.keyRing);
      const logger = new Logger('AtProtoModule');
      if (resolved.privateHosts.length > 0) {
        logger.warn(
          `dangerouslyAllowPrivateHosts: the OAuth client may reach ${resolved.privateHosts.join(', ')} ` +
            '(private network). Meant for a local PDS in development and tests only.',
        );
      }
      if (resolved.allowHttpServers) {
        logger.warn(
          'allowHttpServers: authorization servers and PDSes on plain http are accepted. ' +
            'Meant for a local PDS in development and tests only.',
        );
      }
      if (resolved.clientMode === 'loopback') {
        logger.warn(
          `publicUrl ${resolved.publicUrl} is a loopback address: running as the AT Protocol ` +
            'development client (public client, short sessions). Use an https publicUrl in production.',
        );
      }
      return resolved;
    },
  },
  {
    provide: AT_PROTO_STORES,
    inject: [AT_PROTO_OPTIONS, AT_PROTO_DATA_SOURCE, AT_PROTO_LOCK_CONNECTION],
    useFactory: (
      options: ResolvedAtProtoOptions,
      found: DataSource | null,
      redis: RedisClientLike | null,
    ): Stores => {
      const stores = buildStores(options, found);
      if (!options.redisStore || !redis) return stores;
      // OAuth states and sessions in Redis; app sessions (and their cleanup) stay put.
      const redisOptions = { keyPrefix: options.redisKeyPrefix, retry: options.storeRetry };
      return {
        ...stores,
        state: new RedisStateStore(redis, { ...redisOptions, ttlMs: options.stateTtlMs }),
        session: new RedisSessionStore(redis, {
          ...redisOptions,
          ttlMs: options.oauthSessionRetentionMs,
        }),
      };
    },
  },
  { provide: AT_PROTO_STATE_STORE, inject: [AT_PROTO_STORES], useFactory: (s: Stores) => s.state },
  {
    provide: AT_PROTO_SESSION_STORE,
    inject: [AT_PROTO_STORES],
    useFactory: (s: Stores) => s.session,
  },
  {
    provide: AT_PROTO_APP_SESSION_STORE,
    inject: [AT_PROTO_STORES],
    useFactory: (s: Stores) => s.app,
  },
  {
    provide: AT_PROTO_CLEANUP_TARGET,
    inject: [AT_PROTO_STORES],
    useFactory: (s: Stores) => s.cleanup,
  },
  AtProtoCleanupService,
  {
    provide: AT_PROTO_LOCK_CONNECTION,
    inject: [AT_PROTO_OPTIONS],
    useFactory: async (options: ResolvedAtProtoOptions) =>
      options.redis ? createLockConnection(options.redis) : null,
  },
  {
    provide: SessionLocks,
    inject: [AtProtoRequestLock],
    useFactory: (lock: AtProtoRequestLock) => new SessionLocks(lock),
  },
  {
    provide: AtProtoRequestLock,
    inject: [AT_PROTO_LOCK_CONNECTION, AT_PROTO_OPTIONS],
    useFactory: async (connection: RedisClientLike | null, options: ResolvedAtProtoOptions) =>
      connection
        ? createRedlockRequestLock(connection, options.redisKeyPrefix, lockTimings(options))
        : new LocalRequestLock(),
  },
  RedisShutdown,
  AtProtoEvents,
  {
    provide: AT_PROTO_OAUTH_CLIENT,
    inject: [
      AT_PROTO_OPTIONS,
      AT_PROTO_STORES,
      SessionLocks,
      AtProtoEvents,
      AT_PROTO_LOCK_CONNECTION,
    ],
    useFactory: (
      options: ResolvedAtProtoOptions,
      stores: Stores,
      lock: SessionLocks,
      events: AtProtoEvents,
      redis: RedisClientLike | null,
    ): NodeOAuthClient =>
      createOAuthClient(
        options,
        stores.state,
        stores.session,
        lock,
        events,
        redis && options.redisCaches
          ? createRedisOAuthCaches(redis, { keyPrefix: options.redisKeyPrefix })
          : undefined,
      ),
  },
  AtProtoAuthService,
  // Revocations between instances: the Redis channel and the database cursor that let the
  // caches of AppSessionService and AtProtoApiKeyService live appSession.invalidatedCacheTtl.
  AtProtoCacheInvalidation,
  AppSessionService,
  AtProtoAuthGuard,
  ...atProtoNativeProviders,
  {
    provide: AT_PROTO_API_KEY_STORE,
    inject: [AT_PROTO_STORES],
    useFactory: (s: Stores) => s.apiKeys,
  },
  AtProtoApiKeyService,
  // Bot accounts on app passwords: their sessions beside the OAuth sessions.
  {
    provide: AT_PROTO_BOT_SESSION_STORE,
    inject: [AT_PROTO_OPTIONS, AT_PROTO_DATA_SOURCE],
    useFactory: (options: ResolvedAtProtoOptions, found: DataSource | null) =>
      options.storage === 'memory'
        ? new MemoryBotSessionStore()
        : new TypeOrmBotSessionStore(requireDataSource(found, options.dataSourceName), {
            retry: options.storeRetry,
          }),
  },
  AtProtoBotSessionService,
  // Outbound service-auth tokens, cached (shared through Redis when configured).
  AtProtoServiceAuthService,
  // Inbound service-auth tokens (@AtProtoServiceAuth routes).
  AtProtoServiceJwtVerifier,
  // serviceAuth.didDocument, at the host's root.
  ServiceDidDocumentRoute,
  AtProtoExceptionFilter,
  { provide: APP_FILTER, useExisting: AtProtoExceptionFilter },
  // @AtProtoScope routes: every scope they name can be obtained by a login.
  ScopeRoutesCheck,
];

function buildStores(options: ResolvedAtProtoOptions, found: DataSource | null): Stores {
  if (options.storage === 'memory') {
    const state = new MemoryStateStore({ ttlMs: options.stateTtlMs });
    const session = new MemorySessionStore({ ttlMs: options.oauthSessionRetentionMs });
    const app = new MemoryAppSessionStore();
    const apiKeys = new MemoryApiKeyStore();
    return {
      state,
      session,
      app,
      apiKeys,
      cleanup: new MemoryCleanupTarget(state, session, app, apiKeys),
    };
  }
  const dataSource = requireDataSource(found, options.dataSourceName);
  return {
    state: new TypeOrmStateStore(dataSource, {
      ttlMs: options.stateTtlMs,
      retry: options.storeRetry,
    }),
    session: new TypeOrmSessionStore(dataSource, {
      ttlMs: options.oauthSessionRetentionMs,
      retry: options.storeRetry,
    }),
    app: new TypeOrmAppSessionStore(dataSource, { retry: options.storeRetry }),
    apiKeys: new TypeOrmApiKeyStore(dataSource, { retry: options.storeRetry }),
    cleanup: new TypeOrmCleanupTarget(dataSource, options.storeRetry),
  };
}

function requireDataSource(dataSource: DataSource | null, name: string | undefined): DataSource {
  if (dataSource) return dataSource;
  throw new AtProtoConfigError(
    [
      `no TypeORM DataSource${name ? ` named "${name}"` : ''} found: import TypeOrmModule.forRoot` +
        `({ ..., entities: [...atProtoEntities], migrations: [...atProtoMigrations()] }) in your app, ` +
        `or set storage: 'memory' to keep sessions in memory (one instance, lost on restart).`,
    ],
    'AtProtoModule storage',
  );
}

/**
 * The distributed lock's lifetime follows the HTTP time limit: a refresh's token request is
 * sent only while the lock has at least `httpTimeout` + 1 s left (so that it cannot expire
 * while the request is in flight, letting another instance replay the refresh token), and
 * the lock is renewed every half lifetime. So half the lifetime must cover `httpTimeout` +
 * 1 s, with 1 s more for the renewal's own round trip: 24 s with the default 10 s. A crashed
 * holder's lock expires after at most that long; the wait for the lock is at least 6 s more.
 * @internal
 */
export function lockTimings(options: Pick<ResolvedAtProtoOptions, 'httpTimeoutMs'>): {
  ttlMs: number;
  acquireTimeoutMs: number;
} {
  const ttlMs = 2 * (options.httpTimeoutMs + 1000) + 2000;
  return { ttlMs, acquireTimeoutMs: Math.max(30_000, ttlMs + 6000) };
}
