/**
 * The guard reads each route's rules (@Public(), @AtProtoCredentials()) once and keeps them
 * by handler *and* class: a handler inherited by two controllers can be public in one and
 * guarded in the other, whichever is requested first.
 */
import { Controller, Get, type INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AtProtoCredentials, AtProtoModule, Public } from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';

abstract class Shared {
  @Get('x')
  x() {
    return { ok: true };
  }
}

@Public()
@Controller('open')
class OpenController extends Shared {}

@Controller('closed')
class ClosedController extends Shared {}

@AtProtoCredentials({ allow: ['api-key'] })
@Controller('keys')
class KeysController extends Shared {}

async function boot(): Promise<INestApplication> {
  @Module({
    imports: [
      AtProtoModule.forRoot({
        publicUrl: 'http://127.0.0.1:4321',
        encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
        storage: 'memory',
      }),
    ],
    controllers: [OpenController, ClosedController, KeysController],
  })
  class AppModule {}
  const app = await NestFactory.create(AppModule, { logger: false, abortOnError: false });
  await app.listen(0, '127.0.0.1');
  return app;
}

describe.each([
  ['the public route first', ['/open/x', '/closed/x', '/keys/x']],
  ['the guarded routes first', ['/keys/x', '/closed/x', '/open/x']],
])('an inherited handler, %s', (_, order) => {
  let app: INestApplication;
  beforeAll(async () => {
    app = await boot();
  });
  afterAll(async () => {
    await app?.close();
  });

  it('keeps the rules of each controller', async () => {
    const expected: Record<string, number> = { '/open/x': 200, '/closed/x': 401, '/keys/x': 401 };
    const cookie = { cookie: 'atproto_session=' + 'a'.repeat(43) };
    for (let round = 0; round < 2; round++) {
      for (const path of order) {
        const res = await fetch(`${await app.getUrl()}${path}`);
        expect([path, res.status]).toEqual([path, expected[path]]);
      }
    }
    // A cookie on the key-only route: refused as a credential of the wrong kind would be,
    // or as unknown (the session does not exist); never let through.
    const res = await fetch(`${await app.getUrl()}/keys/x`, { headers: cookie });
    expect(res.status).toBe(401);
  });
});
