/**
 * One app instance for the cross-instance tests, run as its own process (see
 * instances.ts): AtProtoModule on a shared PostgreSQL database and a Redis URL, a guarded
 * route, and control routes the test drives (they exist only in this test app).
 *
 * Environment: PORT, DATABASE_URL, REDIS_URL (optional), ENC_KEY, CACHE_TTL,
 * INVALIDATED_CACHE_TTL.
 */
import 'reflect-metadata';
import { Body, Controller, Get, Module, Post, type INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import {
  AppSessionService,
  AtProtoApiKeyService,
  AtProtoCredentials,
  AtProtoDid,
  AtProtoModule,
  atProtoEntities,
  Public,
} from 'nestjs-atproto-auth';

const env = process.env;
const port = Number(env.PORT);

@Controller()
class TestController {
  constructor(
    private readonly sessions: AppSessionService,
    private readonly keys: AtProtoApiKeyService,
  ) {}

  @Get('me')
  @AtProtoCredentials({ allow: ['cookie', 'api-key'] })
  me(@AtProtoDid() did: string) {
    return { did };
  }

  @Public()
  @Post('control/session')
  async session(@Body() body: { did: string }) {
    const { token, session } = await this.sessions.create(body.did);
    return { token, id: session.id };
  }

  @Public()
  @Post('control/revoke')
  async revoke(@Body() body: { id: string }) {
    return { revoked: await this.sessions.revoke(body.id) };
  }

  @Public()
  @Post('control/revoke-all')
  async revokeAll(@Body() body: { did: string }) {
    return { revoked: await this.sessions.revokeAll(body.did) };
  }

  @Public()
  @Post('control/key')
  async key(@Body() body: { did: string }) {
    const { key, info } = await this.keys.create(body.did, { name: 'test' });
    return { key, id: info.id };
  }

  @Public()
  @Post('control/revoke-key')
  async revokeKey(@Body() body: { id: string; did: string }) {
    return { revoked: await this.keys.revoke(body.id, { did: body.did }) };
  }

  @Public()
  @Get('control/state')
  state() {
    return { state: invalidationState() };
  }
}

@Module({
  imports: [
    TypeOrmModule.forRoot({
      type: 'postgres',
      url: env.DATABASE_URL,
      entities: [...atProtoEntities],
    }),
    AtProtoModule.forRoot({
      publicUrl: `http://127.0.0.1:${port}`,
      encryption: { activeKeyId: 'k', keys: { k: env.ENC_KEY! } },
      ...(env.REDIS_URL ? { redis: env.REDIS_URL } : {}),
      appSession: {
        cacheTtl: Number(env.CACHE_TTL),
        // Ignored by a version without it (the options schema drops unknown keys).
        invalidatedCacheTtl: Number(env.INVALIDATED_CACHE_TTL),
      },
      cleanup: { enabled: false },
    }),
  ],
  controllers: [TestController],
})
class InstanceModule {}

/** Where invalidation stands, or null in a version without it. */
let invalidationState: () => unknown = () => null;

const app: INestApplication = await NestFactory.create(InstanceModule, {
  logger: ['error', 'warn', 'log'],
});
try {
  const { AtProtoCacheInvalidation } =
    await import('../../../lib/invalidation/cache-invalidation.js');
  const bus = app.get(AtProtoCacheInvalidation, { strict: false });
  invalidationState = () => bus.state();
} catch {
  // a version without cache invalidation
}
app.enableShutdownHooks();
await app.listen(port, '127.0.0.1');
console.log(`INSTANCE-READY ${port}`);
