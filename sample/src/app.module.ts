import { type DynamicModule, Global, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import {
  AtProtoModule,
  atProtoEntities,
  atProtoMigrations,
  type AtProtoModuleOptions,
} from 'nestjs-atproto-auth';
import type { SampleConfig } from './config.js';
import { ApiController } from './api.controller.js';
import { HealthController } from './health.controller.js';
import { HomeController } from './home.controller.js';
import { HtmlErrorFilter } from './html-error.filter.js';
import { MeController } from './me.controller.js';

/** Injection token of the sample's {@link SampleConfig}. */
export const SAMPLE_CONFIG = Symbol('SAMPLE_CONFIG');

/** Makes the config injectable everywhere (what `@nestjs/config`'s ConfigModule does in a real app). */
@Global()
@Module({})
class SampleConfigModule {
  static register(config: SampleConfig): DynamicModule {
    return {
      module: SampleConfigModule,
      providers: [{ provide: SAMPLE_CONFIG, useValue: config }],
      exports: [SAMPLE_CONFIG],
    };
  }
}

@Module({})
export class AppModule {
  static forRoot(config: SampleConfig): DynamicModule {
    return {
      module: AppModule,
      imports: [
        SampleConfigModule.register(config),
        TypeOrmModule.forRoot({
          ...(config.databaseUrl
            ? // Several instances: one PostgreSQL database shared by all of them.
              { type: 'postgres' as const, url: config.databaseUrl }
            : { type: 'better-sqlite3' as const, database: config.databasePath, enableWAL: true }),
          // The library's three tables, created by its shipped migrations at boot.
          entities: [...atProtoEntities],
          migrations: atProtoMigrations(),
          migrationsRun: true,
        }),
        AtProtoModule.forRootAsync({
          // Decided before the options factory runs: it changes the module's imports.
          bullmq: config.bullmq,
          inject: [SAMPLE_CONFIG],
          useFactory: (c: SampleConfig): AtProtoModuleOptions => ({
            // http://127.0.0.1:<port>: the AT Protocol loopback development client (no keys).
            // An https URL makes it a confidential client, which needs a signing key.
            publicUrl: c.publicUrl,
            clientName: 'nestjs-atproto-auth sample',
            ...(c.privateJwk ? { keys: [c.privateJwk] } : {}),
            encryption: { activeKeyId: 'sample-1', keys: { 'sample-1': c.encryptionKey } },
            // Command-line apps (sample/cli.mjs) sign in through the browser and get a token
            // pair; they listen on 127.0.0.1, any port.
            native: {
              redirectUris: ['http://127.0.0.1/cli'],
              tokenSecrets: { activeKid: 'sample-1', keys: { 'sample-1': c.nativeTokenSecret } },
            },
            afterLoginPath: '/me',
            afterLogoutPath: '/',
            // Only for a local PDS: resolve handles and DIDs there, allow plain http, and
            // let the OAuth client reach these two private hosts (and no other).
            ...(c.handleResolver ? { handleResolver: c.handleResolver } : {}),
            ...(c.plcDirectoryUrl ? { plcDirectoryUrl: c.plcDirectoryUrl } : {}),
            allowHttpServers: c.allowHttpServers,
            dangerouslyAllowPrivateHosts: c.privateHosts,
            // Several instances: the distributed session lock (needs ioredis and redlock).
            ...(c.redisUrl ? { redis: c.redisUrl } : {}),
            cleanup: c.cleanup,
          }),
        }),
      ],
      controllers: [HomeController, MeController, ApiController, HealthController],
      providers: [{ provide: APP_FILTER, useClass: HtmlErrorFilter }],
    };
  }
}
