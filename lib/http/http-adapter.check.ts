import { Injectable, type OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';

/**
 * Refuses to boot an HTTP app whose adapter is not Express. The module's routes and its
 * exception filter use Express's response API (`res.setHeader`, `res.redirect(status, url)`,
 * `res.status().json()`); on Fastify every one of them would answer 500 at request time, so
 * the mismatch is reported at boot instead.
 *
 * The check runs in `onModuleInit`, not in the constructor: a testing module
 * (`Test.createTestingModule(...).compile()`) builds providers before
 * `createNestApplication()` attaches the adapter, and `app.init()` runs the hook after that
 * in every case. A context without an HTTP adapter (`NestFactory.createApplicationContext`,
 * e.g. a CLI running cleanup) has no routes to break and boots.
 * @internal
 */
@Injectable()
export class AtProtoHttpAdapterCheck implements OnModuleInit {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  /** @throws AtProtoConfigError when the HTTP adapter is not Express. */
  onModuleInit(): void {
    // Typed as always present, but undefined (or null) in a context without HTTP.
    const adapter = this.adapterHost.httpAdapter as { getType?: () => unknown } | null | undefined;
    if (!adapter) return;
    const type = typeof adapter.getType === 'function' ? adapter.getType() : undefined;
    if (type === 'express') return;
    const shown = typeof type === 'string' ? `"${type.slice(0, 40)}"` : 'not named';
    throw new AtProtoConfigError(
      [
        `the HTTP adapter is ${shown}, and AtProtoModule's routes and exception filter need ` +
          'Express (@nestjs/platform-express): create the app with NestFactory.create(AppModule) ' +
          '(Express is the default) or with new ExpressAdapter(). Fastify is not supported yet.',
      ],
      'AtProtoModule HTTP platform',
    );
  }
}
