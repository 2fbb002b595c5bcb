import { ConfigurableModuleBuilder } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { AT_PROTO_DATA_SOURCE, AT_PROTO_MODULE_EXTRAS } from './at-proto.constants.js';
import { AtProtoSessionErrorsModule } from './filters/session-errors.module.js';
import { AtProtoAuthGuard } from './guards/at-proto-auth.guard.js';
import { createOAuthController } from './oauth/oauth.controller.js';
import type {
  AtProtoModuleExtras,
  AtProtoModuleOptions,
} from './options/at-proto-options.interface.js';

/** @internal */
export const {
  ConfigurableModuleClass: AtProtoConfigurableModule,
  MODULE_OPTIONS_TOKEN: AT_PROTO_RAW_OPTIONS,
  OPTIONS_TYPE: AT_PROTO_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: AT_PROTO_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<AtProtoModuleOptions>({ moduleName: 'AtProto' })
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createAtProtoOptions')
  // The route prefix, the global guard and the DataSource shape the module (its controller
  // path, its APP_GUARD provider, what it injects), which Nest fixes before an async options
  // factory can run: they are "extras", given next to useFactory, not inside its result.
  .setExtras<AtProtoModuleExtras>(
    { routePrefix: 'oauth', globalGuard: true, isGlobal: true, bullmq: false },
    (definition, extras) => ({
      ...definition,
      global: extras.isGlobal ?? true,
      imports: [
        ...(definition.imports ?? []),
        // Maps session errors with an interceptor only when the app has exception filters of
        // its own (see the module).
        AtProtoSessionErrorsModule,
        // Loaded only when asked for: @nestjs/bullmq and bullmq are optional peers. Nest
        // accepts a promise of a dynamic module among imports.
        ...(extras.bullmq
          ? [
              import('./cleanup/bullmq/cleanup-queue.module.js').then((m) =>
                m.AtProtoCleanupQueueModule.register(),
              ),
            ]
          : []),
      ],
      controllers: [
        ...(definition.controllers ?? []),
        createOAuthController(extras.routePrefix ?? 'oauth'),
      ],
      providers: [
        ...(definition.providers ?? []),
        { provide: AT_PROTO_MODULE_EXTRAS, useValue: extras },
        {
          // Injected (not looked up) so that Nest creates the DataSource first; optional so
          // that `storage: 'memory'` works without TypeORM configured.
          provide: AT_PROTO_DATA_SOURCE,
          inject: [{ token: getDataSourceToken(extras.dataSourceName), optional: true }],
          useFactory: (dataSource: DataSource | undefined) => dataSource ?? null,
        },
        ...(extras.globalGuard === false
          ? []
          : [{ provide: APP_GUARD, useExisting: AtProtoAuthGuard }]),
      ],
    }),
  )
  .build();
