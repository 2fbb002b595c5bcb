import { Module } from '@nestjs/common';
import {
  AT_PROTO_APP_SESSION_STORE,
  AT_PROTO_OAUTH_CLIENT,
  AT_PROTO_OPTIONS,
  AT_PROTO_SESSION_STORE,
  AT_PROTO_STATE_STORE,
} from './at-proto.constants.js';
import { AtProtoConfigurableModule } from './at-proto.module-definition.js';
import { atProtoProviders } from './at-proto.providers.js';
import { AtProtoCleanupService } from './cleanup/at-proto-cleanup.service.js';
import { AtProtoEvents } from './events/at-proto-events.js';
import { AtProtoAuthGuard } from './guards/at-proto-auth.guard.js';
import { AtProtoRequestLock } from './lock/request-lock.js';
import { AtProtoAuthService } from './oauth/at-proto-auth.service.js';
import { AppSessionService } from './session/app-session.service.js';
import { AtProtoApiKeyService } from './api-keys/api-key.service.js';
import { AtProtoNativeService } from './native/native.service.js';
import { AtProtoServiceAuthService } from './service-auth/service-auth.service.js';
import { AtProtoBotSessionService } from './bots/bot-session.service.js';
import { AtProtoServiceJwtVerifier } from './service-auth/service-jwt-verifier.js';

/**
 * AT Protocol (Bluesky) OAuth login for a NestJS app: the OAuth client, its routes
 * (`client-metadata.json`, `jwks.json`, `login`, `callback`, `logout`), app sessions in
 * cookies, the global `AtProtoAuthGuard`, and encrypted storage on the app's TypeORM
 * DataSource.
 *
 * @example
 * AtProtoModule.forRootAsync({
 *   inject: [ConfigService],
 *   useFactory: (c: ConfigService) => ({
 *     publicUrl: c.getOrThrow('PUBLIC_URL'),
 *     keys: [c.getOrThrow('ATPROTO_PRIVATE_JWK_1')],
 *     encryption: { activeKeyId: '2026-11', keys: { '2026-11': c.getOrThrow('ATPROTO_ENC_KEY') } },
 *   }),
 * })
 * @publicApi
 */
@Module({
  providers: atProtoProviders,
  exports: [
    AT_PROTO_OPTIONS,
    AT_PROTO_OAUTH_CLIENT,
    AT_PROTO_STATE_STORE,
    AT_PROTO_SESSION_STORE,
    AT_PROTO_APP_SESSION_STORE,
    AtProtoRequestLock,
    AtProtoEvents,
    AtProtoAuthService,
    AppSessionService,
    AtProtoAuthGuard,
    AtProtoCleanupService,
    AtProtoNativeService,
    AtProtoApiKeyService,
    AtProtoServiceAuthService,
    AtProtoServiceJwtVerifier,
    AtProtoBotSessionService,
  ],
})
export class AtProtoModule extends AtProtoConfigurableModule {}
