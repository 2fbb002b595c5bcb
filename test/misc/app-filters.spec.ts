/** Which filter answers a session error wrapped by an Agent, wherever the app's own filters sit: always the module's mapping (401), as before the module's interceptor became conditional. */
import {
  type ArgumentsHost,
  Catch,
  Controller,
  type ExceptionFilter,
  Get,
  type INestApplication,
  Module,
  UseFilters,
  HttpException,
} from '@nestjs/common';
import { APP_FILTER, ApplicationConfig, BaseExceptionFilter, NestFactory } from '@nestjs/core';
import { XRPCError } from '@atproto/xrpc';
import { AtProtoModule, AtProtoSessionUnavailableError, Public } from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';

const DID = 'did:plc:cccccccccccccccccccccccc';
const ended = () =>
  new XRPCError(401, 'x', 'wrapped', undefined, {
    cause: new AtProtoSessionUnavailableError('ended', { did: DID }),
  });

/** A typical app catch-all: logs, formats, defers to Nest for the status. */
@Catch()
class CatchAll extends BaseExceptionFilter {
  override catch(error: unknown, host: ArgumentsHost): void {
    const res = host
      .switchToHttp()
      .getResponse<{ status(n: number): { json(b: unknown): void } }>();
    const status = error instanceof HttpException ? error.getStatus() : 500;
    res.status(status).json({ app: true, status });
  }
}
@Catch(XRPCError)
class XrpcTo502 implements ExceptionFilter {
  catch(_e: XRPCError, host: ArgumentsHost): void {
    host
      .switchToHttp()
      .getResponse<{ status(n: number): { json(b: unknown): void } }>()
      .status(502)
      .json({ app: 'xrpc' });
  }
}

@Controller('scoped')
@UseFilters(CatchAll)
class ScopedController {
  @Public() @Get() h(): never {
    throw ended();
  }
}
@Controller('xrpc-scoped')
@UseFilters(XrpcTo502)
class XrpcScopedController {
  @Public() @Get() h(): never {
    throw ended();
  }
}
@Controller('plain')
class PlainController {
  @Public() @Get() h(): never {
    throw ended();
  }
}

@Module({ providers: [{ provide: APP_FILTER, useClass: CatchAll }] })
class ObservabilityModule {}

async function boot(imports: unknown[]): Promise<INestApplication> {
  @Module({
    imports: imports as never,
    controllers: [ScopedController, XrpcScopedController, PlainController],
    providers: [CatchAll, XrpcTo502],
  })
  class AppModule {}
  const app = await NestFactory.create(AppModule, { logger: false, abortOnError: false });
  await app.listen(0, '127.0.0.1');
  return app;
}
const atproto = () =>
  AtProtoModule.forRoot({
    publicUrl: 'http://127.0.0.1:4321',
    encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
    storage: 'memory',
  });
async function status(app: INestApplication, path: string): Promise<number> {
  return (await fetch(`${await app.getUrl()}${path}`)).status;
}

describe('app filters and wrapped session errors', () => {
  let app: INestApplication;
  afterEach(async () => {
    await app?.close();
  });

  it('controller-scoped catch-all filter', async () => {
    app = await boot([atproto()]);
    expect(await status(app, '/scoped')).toBe(401);
  });
  it('controller-scoped @Catch(XRPCError) filter', async () => {
    app = await boot([atproto()]);
    expect(await status(app, '/xrpc-scoped')).toBe(401);
  });
  it('APP_FILTER catch-all in a module imported after AtProtoModule', async () => {
    app = await boot([atproto(), ObservabilityModule]);
    expect(await status(app, '/plain')).toBe(401);
  });
  it('APP_FILTER catch-all in a module imported before AtProtoModule', async () => {
    app = await boot([ObservabilityModule, atproto()]);
    expect(await status(app, '/plain')).toBe(401);
  });
  it('useGlobalFilters catch-all', async () => {
    @Module({ imports: [atproto()], controllers: [PlainController] })
    class M {}
    app = await NestFactory.create(M, { logger: false, abortOnError: false });
    app.useGlobalFilters(new CatchAll());
    await app.listen(0, '127.0.0.1');
    expect(await status(app, '/plain')).toBe(401);
  });
});

describe('the interceptor is there only for apps with filters of their own', () => {
  let app: INestApplication;
  afterEach(async () => {
    await app?.close();
  });
  const interceptors = () => app.get(ApplicationConfig).getGlobalInterceptors().length;

  it('none without', async () => {
    @Module({ imports: [atproto()], controllers: [PlainController] })
    class M {}
    app = await NestFactory.create(M, { logger: false, abortOnError: false });
    await app.init();
    expect(interceptors()).toBe(0);
  });
  it('one with a filter on a controller method', async () => {
    @Controller('m')
    class MethodScoped {
      @Public() @Get() @UseFilters(XrpcTo502) h(): never {
        throw ended();
      }
    }
    @Module({ imports: [atproto()], controllers: [MethodScoped], providers: [XrpcTo502] })
    class M {}
    app = await NestFactory.create(M, { logger: false, abortOnError: false });
    await app.listen(0, '127.0.0.1');
    expect(interceptors()).toBe(1);
    expect(await status(app, '/m')).toBe(401);
  });
});
