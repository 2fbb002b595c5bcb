/**
 * The module's wiring: forRoot / forRootAsync (useFactory, useClass, useExisting), the
 * extras (route prefix, global guard off), boot-time validation, memory storage.
 */
import {
  Controller,
  Get,
  Injectable,
  type INestApplication,
  Module,
  UseGuards,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  AtProtoAuthGuard,
  AtProtoConfigError,
  AtProtoDid,
  AtProtoModule,
  type AtProtoModuleOptions,
  AT_PROTO_OPTIONS,
  type ResolvedAtProtoOptions,
} from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';

const encryption = { activeKeyId: 'k', keys: { k: randomKey() } };
const base: AtProtoModuleOptions = {
  publicUrl: 'http://127.0.0.1:4321',
  encryption,
  storage: 'memory',
};

@Controller()
class ProbeController {
  @Get('open')
  open() {
    return { ok: true };
  }
  @Get('guarded')
  @UseGuards(AtProtoAuthGuard)
  guarded(@AtProtoDid() did: string) {
    return { did };
  }
}

async function boot(imports: unknown[]): Promise<INestApplication> {
  @Module({ imports: imports as never[], controllers: [ProbeController] })
  class AppModule {}
  const app = await NestFactory.create(AppModule, { logger: false, abortOnError: false });
  await app.listen(0, '127.0.0.1');
  return app;
}

async function status(app: INestApplication, path: string): Promise<number> {
  return (await fetch(`${await app.getUrl()}${path}`)).status;
}

@Injectable()
class ConfigLike {
  readonly publicUrl = 'http://127.0.0.1:4321';
}

@Module({ providers: [ConfigLike], exports: [ConfigLike] })
class ConfigLikeModule {}

@Injectable()
class OptionsFactory {
  createAtProtoOptions(): AtProtoModuleOptions {
    return base;
  }
}

@Module({ providers: [OptionsFactory], exports: [OptionsFactory] })
class OptionsFactoryModule {}

describe('AtProtoModule wiring', () => {
  it('forRootAsync with useFactory + inject, a global guard, and the default routes', async () => {
    const app = await boot([
      AtProtoModule.forRootAsync({
        imports: [ConfigLikeModule],
        inject: [ConfigLike],
        useFactory: async (c: ConfigLike) => ({ ...base, publicUrl: c.publicUrl }),
      }),
    ]);
    try {
      expect(app.get<ResolvedAtProtoOptions>(AT_PROTO_OPTIONS).publicUrl).toBe(
        'http://127.0.0.1:4321',
      );
      expect(await status(app, '/open')).toBe(401); // the global guard protects everything
      expect(await status(app, '/oauth/login?input=not+a+handle')).toBe(400); // public route
      expect(await status(app, '/oauth/client-metadata.json')).toBe(404); // loopback client: none
    } finally {
      await app.close();
    }
  });

  it('forRootAsync with useClass, a route prefix and the global guard off', async () => {
    const app = await boot([
      AtProtoModule.forRootAsync({
        useClass: OptionsFactory,
        routePrefix: 'auth/atproto',
        globalGuard: false,
      }),
    ]);
    try {
      expect(await status(app, '/open')).toBe(200);
      expect(await status(app, '/guarded')).toBe(401);
      expect(await status(app, '/auth/atproto/login?input=x')).toBe(400);
      expect(await status(app, '/oauth/login?input=x')).toBe(404);
      expect(app.get<ResolvedAtProtoOptions>(AT_PROTO_OPTIONS).urls.callback).toBe(
        'http://127.0.0.1:4321/auth/atproto/callback',
      );
    } finally {
      await app.close();
    }
  });

  it('forRootAsync with useExisting', async () => {
    const app = await boot([
      AtProtoModule.forRootAsync({ imports: [OptionsFactoryModule], useExisting: OptionsFactory }),
    ]);
    try {
      expect(await status(app, '/open')).toBe(401);
    } finally {
      await app.close();
    }
  });

  it('fails at boot with every problem listed', async () => {
    const error = await boot([
      AtProtoModule.forRoot({
        publicUrl: 'https://app.example.com',
        encryption: { activeKeyId: 'nope', keys: { k: 'dG9vIHNob3J0' } },
        scope: 'transition:generic',
      }),
    ]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoConfigError);
    const problems = (error as AtProtoConfigError).problems.join('\n');
    expect(problems).toMatch(/scope must contain "atproto"/);
    expect(problems).toMatch(/keys is required with an https publicUrl/);
    expect(problems).toMatch(/decodes to 9 bytes/);
    expect(problems).toMatch(/activeKeyId "nope"/);
  });

  it('refuses typeorm storage without a DataSource, saying what to import', async () => {
    const error = await boot([AtProtoModule.forRoot({ ...base, storage: 'typeorm' })]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoConfigError);
    expect((error as Error).message).toMatch(/TypeOrmModule.forRoot/);
  });
});

describe('requests the OAuth client makes for user input', () => {
  it('never reach loopback or private addresses (SSRF guard), with a clean 4xx/5xx', async () => {
    const { createServer } = await import('node:net');
    let connections = 0;
    const server = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const { generateKeyPairSync } = await import('node:crypto');
    const jwk = {
      ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
      kid: 'k1',
    };
    const app = await boot([
      AtProtoModule.forRoot({
        publicUrl: 'https://app.example.com',
        keys: [jwk],
        encryption,
        storage: 'memory',
      }),
    ]);
    try {
      for (const input of [
        `https://127.0.0.1:${port}`,
        `https://localhost:${port}`,
        'https://10.0.0.5',
      ]) {
        const res = await fetch(
          `${await app.getUrl()}/oauth/login?input=${encodeURIComponent(input)}`,
          {
            redirect: 'manual',
          },
        );
        expect([400, 502]).toContain(res.status);
      }
      expect(connections).toBe(0);
    } finally {
      await app.close();
      server.close();
    }
  });
});
