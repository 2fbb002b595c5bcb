/**
 * A NestJS app whose routes other AT Protocol services call with service-auth tokens: the
 * module with in-memory storage (no database), the given controllers, listening on loopback.
 * @internal
 */
import { type DynamicModule, type INestApplication, Module, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { AddressInfo } from 'node:net';
import {
  AtProtoModule,
  type AtProtoModuleExtras,
  type AtProtoModuleOptions,
} from 'nestjs-atproto-auth';
import { randomKey } from '../../support/key-ring.js';
import { CapturingLogger, testSigningKey } from './test-app.js';

/**
 * One encryption option for every app of the test process: encrypted entity columns use
 * the process-wide key ring of the module booted last (see crypto/key-ring.registry.ts),
 * so an app beside a database-backed one must install the same keys. Pass it to
 * `startTestApp` too.
 */
export const SHARED_ENCRYPTION = { activeKeyId: 'e2e', keys: { e2e: randomKey() } };

export interface ServiceApp {
  app: INestApplication;
  url: string;
  logs: string[];
  close(): Promise<void>;
}

/** Boots the app and listens on loopback; a boot error is thrown as is. */
export async function startServiceApp(
  controllers: Type[],
  options: Partial<AtProtoModuleOptions> & AtProtoModuleExtras,
  /** Called before the app listens (e.g. `app.setGlobalPrefix('api')`). */
  prepare?: (app: INestApplication) => void,
): Promise<ServiceApp> {
  const moduleOptions: AtProtoModuleOptions & AtProtoModuleExtras = {
    publicUrl: 'https://service.e2e.internal',
    clientName: 'service e2e',
    keys: [await testSigningKey()],
    encryption: SHARED_ENCRYPTION,
    storage: 'memory',
    ...options,
  };
  @Module({
    imports: [AtProtoModule.forRoot(moduleOptions) as DynamicModule],
    controllers,
  })
  class ServiceAppModule {}
  const logger = new CapturingLogger();
  logger.setLogLevels(['log', 'error', 'warn', 'debug', 'verbose', 'fatal']);
  const app = await NestFactory.create(ServiceAppModule, { logger, abortOnError: false });
  try {
    prepare?.(app);
    await app.listen(0, '127.0.0.1');
  } catch (error) {
    await app.close().catch(() => undefined);
    throw error;
  }
  const { port } = app.getHttpServer().address() as AddressInfo;
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    logs: logger.lines,
    close: () => app.close(),
  };
}
