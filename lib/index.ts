// The one public door of nestjs-atproto-auth. Everything not exported here is internal.
// test/package/public-api.txt lists what this exports; a change here is a change there.
import type { AT_PROTO_ASYNC_OPTIONS_TYPE } from './at-proto.module-definition.js';

export { AtProtoModule } from './at-proto.module.js';
export {
  AT_PROTO_APP_SESSION_STORE,
  AT_PROTO_OAUTH_CLIENT,
  AT_PROTO_OPTIONS,
  AT_PROTO_SESSION_STORE,
  AT_PROTO_STATE_STORE,
} from './at-proto.constants.js';
export type {
  AtProtoModuleExtras,
  AtProtoModuleOptions,
  AtProtoOptionsFactory,
  AtProtoSigningKeyInput,
} from './options/at-proto-options.interface.js';

/**
 * What `AtProtoModule.forRootAsync()` takes: the module extras (`routePrefix`,
 * `globalGuard`, `isGlobal`, `dataSourceName`, `bullmq`) next to `imports`, `inject` and one
 * of `useFactory`, `useClass` or `useExisting` (a class implementing
 * {@link AtProtoOptionsFactory}).
 * @publicApi
 */
export type AtProtoModuleAsyncOptions = typeof AT_PROTO_ASYNC_OPTIONS_TYPE;
export type { ResolvedAtProtoOptions } from './options/resolved-options.js';
export { resolveAtProtoOptions } from './options/resolve-at-proto-options.js';

export { AtProtoAuthService } from './oauth/at-proto-auth.service.js';
export { AppSessionService, type AppSessionInfo } from './session/app-session.service.js';
export {
  appSessionView,
  AtProtoOAuthSessionView,
  AtProtoSessionView,
  type AtProtoSessionKind,
  type AtProtoSessionTimes,
} from './session/session-view.js';
export { AtProtoAuthGuard } from './guards/at-proto-auth.guard.js';
export {
  AtProtoExceptionFilter,
  isSessionEndedError,
} from './filters/at-proto-exception.filter.js';
export type { AtProtoRequestAuth } from './guards/at-proto-request-auth.js';
export { AtProtoDid, AtProtoSession, Public } from './decorators/index.js';
export { AtProtoScope } from './decorators/at-proto-scope.decorator.js';
export type { AtProtoVerifiedTokenCacheStats } from './service-auth/verified-token-cache.js';
export {
  AtProtoCredentials,
  type AtProtoCredentialsOptions,
} from './decorators/at-proto-credentials.decorator.js';
export type { AtProtoCredentialKind } from './credentials/credentials.js';
export {
  AtProtoEvents,
  type AtProtoEvent,
  type AtProtoBotSessionEndedReason,
  type AtProtoSessionDeletedReason,
} from './events/at-proto-events.js';
export {
  AtProtoRequestLock,
  LocalRequestLock,
  type AtProtoLockLease,
  type LocalRequestLockOptions,
} from './lock/request-lock.js';
export {
  RedlockRequestLock,
  type RedisEvalClient,
  type RedlockLike,
  type RedlockLockLike,
  type RedlockRequestLockOptions,
  type RedlockSettings,
} from './lock/redlock-request-lock.js';
export { AtProtoCleanupService } from './cleanup/at-proto-cleanup.service.js';
export type { CleanupResult } from './cleanup/cleanup.interface.js';

export {
  KeyRing,
  type KeyRingOptions,
  encryptedColumn,
  installKeyRing,
  getInstalledKeyRing,
} from './crypto/index.js';

export {
  AtProtoAppSessionEntity,
  AtProtoOAuthSessionEntity,
  AtProtoOAuthStateEntity,
  atProtoEntities,
} from './storage/entities/index.js';
export { atProtoMigrations, AtProtoInit1763800000000 } from './storage/migrations/index.js';
export { AtProtoApiKeys1795857400000 } from './storage/migrations/1795857400000-at-proto-api-keys.js';
export { AtProtoNative1795857600000 } from './storage/migrations/1795857600000-at-proto-native.js';
export { AtProtoBotSessions1795857900000 } from './storage/migrations/1795857900000-at-proto-bot-sessions.js';
export { AtProtoApiKeyEntity } from './storage/entities/api-key.entity.js';
export { AtProtoNativeCodeEntity } from './storage/entities/native-code.entity.js';
export { AtProtoNativeRefreshFamilyEntity } from './storage/entities/native-refresh-family.entity.js';
export { AtProtoBotSessionEntity } from './storage/entities/bot-session.entity.js';

export {
  AtProtoApiKeyService,
  apiKeyHasScopes,
  type AtProtoApiKeyCreateOptions,
  type AtProtoApiKeyInfo,
} from './api-keys/api-key.service.js';
export type { AtProtoApiKeyOptions } from './api-keys/api-key-options.js';
export type { AtProtoApiKeyRecord, AtProtoApiKeyStore } from './api-keys/api-key.store.js';
export { AT_PROTO_API_KEY_STORE } from './api-keys/api-key.constants.js';
export { MemoryApiKeyStore } from './storage/memory/memory-api-key.store.js';
export { TypeOrmApiKeyStore } from './storage/typeorm/typeorm-api-key.store.js';

export {
  AtProtoNativeService,
  type NativeAccessTokenInfo,
  type NativeTokenResponse,
} from './native/native.service.js';
export { AtProtoTokenError, type AtProtoTokenErrorCode } from './native/native-token.error.js';
export type { AtProtoNativeOptions } from './native/native-options.js';
export {
  hasSessionInfo,
  isVersionedSessionStore,
  type AppSessionRecord,
  type AppSessionStore,
  type AtProtoKeyValueStore,
  type AtProtoOAuthSessionInfo,
  type AtProtoSessionInfoStore,
  type AtProtoSessionStore,
  type AtProtoStateStore,
  type AtProtoStoreOptions,
  type AtProtoVersionedSessionStore,
  type VersionedSession,
} from './storage/store.interface.js';
export {
  TypeOrmStateStore,
  type TypeOrmStoreOptions,
} from './storage/typeorm/typeorm-state.store.js';
export { TypeOrmSessionStore } from './storage/typeorm/typeorm-session.store.js';
export { TypeOrmAppSessionStore } from './storage/typeorm/typeorm-app-session.store.js';
export {
  MemoryAppSessionStore,
  MemorySessionStore,
  MemoryStateStore,
} from './storage/memory/memory.stores.js';
export {
  createRedisOAuthCaches,
  REDIS_OAUTH_CACHE_TTL_MS,
  RedisSessionStore,
  RedisStateStore,
  type RedisCommandClient,
  type RedisScriptingClient,
  type RedisOAuthCaches,
  type RedisOAuthCachesOptions,
  type RedisStoreOptions,
} from './storage/redis/index.js';
export { isTransientDatabaseError, type TransientRetryOptions } from './storage/transient-retry.js';
export {
  reencrypt,
  type ReencryptFailure,
  type ReencryptOptions,
  type ReencryptProgress,
  type ReencryptResult,
  type ReencryptTable,
  type ReencryptTableCounts,
} from './storage/reencrypt.js';

export {
  AtProtoServiceAuthService,
  type AtProtoServiceTokenRequest,
} from './service-auth/service-auth.service.js';
export type { AtProtoServiceAuthStats } from './service-auth/service-token-cache.js';
export type {
  AtProtoDidDocumentService,
  AtProtoServiceAuthOptions,
} from './service-auth/service-auth-options.js';
export {
  AtProtoServiceJwtVerifier,
  type AtProtoServiceCaller,
} from './service-auth/service-jwt-verifier.js';
export type { AtProtoServiceAuthRouteOptions } from './service-auth/service-auth-route.js';
export { AtProtoServiceAuthGuard } from './service-auth/service-auth.guard.js';
export { AtProtoServiceAuth } from './decorators/at-proto-service-auth.decorator.js';
export { AtProtoCaller } from './decorators/at-proto-caller.decorator.js';

export {
  AtProtoBotSessionService,
  type AtProtoBotLoginOptions,
} from './bots/bot-session.service.js';
export { AtProtoBotSession } from './bots/bot-session.js';
export type { AtProtoBotOptions } from './bots/bot-options.js';

export * from './errors/index.js';

/** The OAuth session type `@AtProtoSession()` injects (from `@atproto/oauth-client-node`). */
export type { OAuthSession } from '@atproto/oauth-client-node';
