/**
 * How session errors that escape a handler are answered, and what the module leaves to the
 * app: the module's exception filter maps its own errors wherever they sit in a cause chain
 * (an `Agent` wraps every error of `session.fetchHandler()` in an `XRPCError`), and no other
 * error; it adds no interceptor, so that routes do not pay Nest's interceptor pipeline.
 */
import {
  type ArgumentsHost,
  Catch,
  Controller,
  type ExceptionFilter,
  Get,
  type INestApplication,
  Module,
} from '@nestjs/common';
import { APP_FILTER, ApplicationConfig, NestFactory } from '@nestjs/core';
import { XRPCError } from '@atproto/xrpc';
import {
  AtProtoExceptionFilter,
  AtProtoModule,
  AtProtoSessionUnavailableError,
  AtProtoStoreError,
  Public,
} from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';

const DID = 'did:plc:cccccccccccccccccccccccc';

@Controller()
class ThrowingController {
  /** What an `Agent` call throws when the module found the session ended. */
  @Public()
  @Get('agent-ended')
  agentEnded(): never {
    throw new XRPCError(401, 'SessionEnded', 'wrapped', undefined, {
      cause: new AtProtoSessionUnavailableError('ended', { did: DID }),
    });
  }
  /** The app's own wrapping of a storage failure of the module. */
  @Public()
  @Get('wrapped-store')
  wrappedStore(): never {
    throw new Error('could not load the feed', {
      cause: new AtProtoStoreError('read failed', { cause: new Error('ECONNREFUSED') }),
    });
  }
  /** An XRPC error that is not about the session (the AppView said no). */
  @Public()
  @Get('xrpc-other')
  xrpcOther(): never {
    throw new XRPCError(400, 'InvalidRequest', 'bad cursor');
  }
}

/** The app's own filter for XRPC errors, registered like the module's (APP_FILTER). */
@Catch(XRPCError)
class AppXrpcFilter implements ExceptionFilter {
  catch(error: XRPCError, host: ArgumentsHost): void {
    host
      .switchToHttp()
      .getResponse<{ status(n: number): { json(b: unknown): void } }>()
      .status(418)
      .json({ app: true, error: error.error });
  }
}

async function boot(withAppFilter: boolean): Promise<INestApplication> {
  @Module({
    imports: [
      AtProtoModule.forRoot({
        publicUrl: 'http://127.0.0.1:4321',
        encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
        storage: 'memory',
      }),
    ],
    controllers: [ThrowingController],
    providers: withAppFilter ? [{ provide: APP_FILTER, useClass: AppXrpcFilter }] : [],
  })
  class AppModule {}
  const app = await NestFactory.create(AppModule, { logger: false, abortOnError: false });
  await app.listen(0, '127.0.0.1');
  return app;
}

async function get(
  app: INestApplication,
  path: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${await app.getUrl()}${path}`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('session errors that escape a handler', () => {
  let app: INestApplication;
  beforeAll(async () => {
    app = await boot(false);
  });
  afterAll(async () => {
    await app?.close();
  });

  it('answers an ended session wrapped in an XRPCError with 401', async () => {
    const res = await get(app, '/agent-ended');
    expect(res.status).toBe(401);
    expect(res.body.message).toBe('The AT Protocol session has ended. Log in again.');
  });

  it("answers the module's storage failure wrapped by the app with 503, without internals", async () => {
    const res = await get(app, '/wrapped-store');
    expect(res.status).toBe(503);
    expect(JSON.stringify(res.body)).not.toContain('ECONNREFUSED');
  });

  it('leaves other errors alone (Nest answers 500)', async () => {
    expect((await get(app, '/xrpc-other')).status).toBe(500);
  });

  it('adds no global interceptor (routes do not pay for an interceptor pipeline)', () => {
    expect(app.get(ApplicationConfig).getGlobalInterceptors()).toEqual([]);
  });

  it('AtProtoExceptionFilter.handles() says which errors the filter answers', () => {
    expect(
      AtProtoExceptionFilter.handles(
        new XRPCError(401, 'x', 'y', undefined, {
          cause: new AtProtoSessionUnavailableError('ended', { did: DID }),
        }),
      ),
    ).toBe(true);
    expect(AtProtoExceptionFilter.handles(new XRPCError(400, 'InvalidRequest', 'no'))).toBe(false);
    expect(AtProtoExceptionFilter.handles(new Error('x'))).toBe(false);
    expect(AtProtoExceptionFilter.handles('not an error')).toBe(false);
  });
});

describe("an app's own filter for XRPC errors", () => {
  let app: INestApplication;
  beforeAll(async () => {
    app = await boot(true);
  });
  afterAll(async () => {
    await app?.close();
  });

  it('still gets the XRPC errors that are not about the session', async () => {
    const res = await get(app, '/xrpc-other');
    expect(res.status).toBe(418);
    expect(res.body).toEqual({ app: true, error: 'InvalidRequest' });
  });

  it('does not get those the module maps', async () => {
    expect((await get(app, '/agent-ended')).status).toBe(401);
  });
});

describe('AtProtoExceptionFilter.handles() on hostile error structures', () => {
  const ended = () => new AtProtoSessionUnavailableError('ended', { did: DID });

  it('ends on cycles, throwing getters and self-multiplying aggregates', () => {
    const cyclic = new Error('a');
    (cyclic as { cause?: unknown }).cause = cyclic;
    expect(AtProtoExceptionFilter.handles(cyclic)).toBe(false);
    const thrower = new Error('g');
    Object.defineProperty(thrower, 'cause', {
      get() {
        throw new Error('boom');
      },
    });
    expect(AtProtoExceptionFilter.handles(thrower)).toBe(false);
    // Twelve references to itself: without each error visited once, the walk would read
    // `errors` 12^6 times (seconds of CPU for one thrown error).
    let reads = 0;
    const aggregate = new AggregateError([]);
    Object.defineProperty(aggregate, 'errors', {
      get: () => {
        reads++;
        return Array<unknown>(12).fill(aggregate);
      },
    });
    expect(AtProtoExceptionFilter.handles(aggregate)).toBe(false);
    expect(reads).toBe(1);
    const fanOut = new AggregateError(
      Array.from({ length: 12 }, () => new AggregateError(Array<unknown>(12).fill(new Error('x')))),
    );
    expect(AtProtoExceptionFilter.handles(fanOut)).toBe(false);
  });

  it('finds the module error among aggregated ones, not inside an HttpException', () => {
    expect(
      AtProtoExceptionFilter.handles(
        new AggregateError([new Error('x'), new AtProtoStoreError('s')]),
      ),
    ).toBe(true);
    expect(AtProtoExceptionFilter.handles({ cause: ended() })).toBe(false); // not an Error
  });
});
