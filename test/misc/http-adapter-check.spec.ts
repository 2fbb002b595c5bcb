import { Controller, Get, Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { Test } from '@nestjs/testing';
import { AtProtoConfigError } from 'nestjs-atproto-auth';
import { AtProtoHttpAdapterCheck } from '../../lib/http/http-adapter.check.js';

/**
 * Stands in for @nestjs/platform-fastify's FastifyAdapter, which is not installed: Express
 * underneath (so that Nest can set the app up), but reporting itself as Fastify, which is
 * all the check reads.
 */
class FastifyLikeAdapter extends ExpressAdapter {
  override getType(): string {
    return 'fastify';
  }
}

@Controller('ping')
class PingController {
  @Get()
  ping(): string {
    return 'pong';
  }
}

@Module({ controllers: [PingController], providers: [AtProtoHttpAdapterCheck] })
class CheckedModule {}

async function initError(app: INestApplicationContext): Promise<unknown> {
  try {
    await app.init();
    return undefined;
  } catch (error) {
    return error;
  } finally {
    await app.close().catch(() => undefined);
  }
}

describe('AtProtoHttpAdapterCheck', () => {
  it('refuses to boot on Fastify with a config error that names Express', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [CheckedModule] }).compile();
    const error = await initError(
      moduleRef.createNestApplication(new FastifyLikeAdapter(), { logger: false }),
    );
    expect(error).toBeInstanceOf(AtProtoConfigError);
    expect((error as AtProtoConfigError).code).toBe('ERR_AT_PROTO_CONFIG');
    expect((error as Error).message).toMatch(/"fastify"/);
    expect((error as Error).message).toMatch(/Express \(@nestjs\/platform-express\)/);
  });

  it('refuses through NestFactory.create as well', async () => {
    const app = await NestFactory.create(CheckedModule, new FastifyLikeAdapter(), {
      logger: false,
      abortOnError: false,
    });
    expect(await initError(app)).toBeInstanceOf(AtProtoConfigError);
  });

  it('boots on Express and serves', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [CheckedModule] }).compile();
    const app = moduleRef.createNestApplication(new ExpressAdapter(), { logger: false });
    await app.listen(0, '127.0.0.1');
    try {
      const res = await fetch(`${await app.getUrl()}/ping`.replace('[::1]', '127.0.0.1'));
      expect(await res.text()).toBe('pong');
    } finally {
      await app.close();
    }
  });

  it('boots without any HTTP adapter (a standalone application context, e.g. a CLI)', async () => {
    const context = await NestFactory.createApplicationContext(CheckedModule, {
      logger: false,
      abortOnError: false,
    });
    expect(context.get(AtProtoHttpAdapterCheck)).toBeInstanceOf(AtProtoHttpAdapterCheck);
    await context.close();
    const moduleRef = await Test.createTestingModule({ imports: [CheckedModule] }).compile();
    await moduleRef.init();
    await moduleRef.close();
  });
});
