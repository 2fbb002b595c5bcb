/** The sample's HtmlErrorFilter (@Catch(HttpException), APP_FILTER) gets the 401 of a session that ended inside a handler, and sends the browser to the login page. */
import { Controller, Get, type INestApplication, Module } from '@nestjs/common';
import { APP_FILTER, NestFactory } from '@nestjs/core';
import { XRPCError } from '@atproto/xrpc';
import { AtProtoModule, AtProtoSessionUnavailableError, Public } from 'nestjs-atproto-auth';
import { HtmlErrorFilter } from '../../sample/src/html-error.filter.js';
import { randomKey } from '../support/key-ring.js';

@Controller()
class C {
  @Public() @Get('feed') feed(): never {
    throw new XRPCError(401, 'x', 'wrapped', undefined, {
      cause: new AtProtoSessionUnavailableError('ended', {
        did: 'did:plc:cccccccccccccccccccccccc',
      }),
    });
  }
}
it('a browser whose session ended inside a handler is sent to the login page (sample HtmlErrorFilter)', async () => {
  @Module({
    imports: [
      AtProtoModule.forRoot({
        publicUrl: 'http://127.0.0.1:4321',
        encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
        storage: 'memory',
      }),
    ],
    controllers: [C],
    providers: [{ provide: APP_FILTER, useClass: HtmlErrorFilter }],
  })
  class M {}
  const app: INestApplication = await NestFactory.create(M, { logger: false, abortOnError: false });
  await app.listen(0, '127.0.0.1');
  try {
    const res = await fetch(`${await app.getUrl()}/feed`, {
      headers: { accept: 'text/html' },
      redirect: 'manual',
    });
    expect({ status: res.status, type: res.headers.get('content-type') }).toEqual({
      status: 302,
      type: expect.anything(),
    });
  } finally {
    await app.close();
  }
});
