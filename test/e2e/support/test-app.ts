import {
  ConsoleLogger,
  Controller,
  Get,
  type INestApplication,
  type LogLevel,
  Module,
  Param,
  Req,
  UnauthorizedException,
  type DynamicModule,
  type Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { Agent } from '@atproto/api';
import { JoseKey, type OAuthSession } from '@atproto/oauth-client-node';
import type { AddressInfo } from 'node:net';
import type { DataSource, DataSourceOptions } from 'typeorm';
import {
  AtProtoAuthService,
  AtProtoCredentials,
  AtProtoDid,
  AtProtoModule,
  AtProtoSession,
  atProtoEntities,
  atProtoMigrations,
  type AtProtoModuleExtras,
  type AtProtoModuleOptions,
  Public,
} from 'nestjs-atproto-auth';
import { randomKey } from '../../support/key-ring.js';
import { forwardOriginToLocal, type TestPds } from './pds.js';

/** The https origin the PDS sees for the app (forwarded to the app's loopback listener). */
export const APP_ORIGIN = 'https://app.e2e.internal';

@Controller('me')
class MeController {
  constructor(private readonly auth: AtProtoAuthService) {}

  @Get()
  me(@AtProtoDid() did: string) {
    return { did };
  }

  /**
   * Acts as another DID (a bot or service account would): its session errors escape to the
   * module's exception filter.
   */
  @Get('as/:did')
  async asOther(@Param('did') did: string) {
    const session = await this.auth.restore(did);
    return { did: session.did };
  }

  /** Acts on the user's PDS; accepts every credential (API keys included). */
  @AtProtoCredentials({ allow: ['cookie', 'bearer', 'api-key'] })
  @Get('pds')
  async pds(
    @AtProtoSession() session: OAuthSession,
    @Req() req: { atproto?: { credential: string } },
  ) {
    const res = await session.fetchHandler('/xrpc/com.atproto.server.getSession');
    return { status: res.status, did: session.did, credential: req.atproto?.credential };
  }

  /** The app's own 401, nothing to do with the AT Protocol session. */
  @Get('pin')
  pin() {
    throw new UnauthorizedException('Wrong PIN');
  }

  /** Calls the user's PDS through an `Agent` (which wraps every error in an XRPCError). */
  @Get('agent')
  async agent(@AtProtoSession() session: OAuthSession) {
    const { data } = await new Agent(session).com.atproto.server.getSession();
    return { did: data.did };
  }

  /** Several Agent calls at once (a page that loads a profile and a feed together). */
  @Get('agent-many')
  async agentMany(@AtProtoSession() session: OAuthSession) {
    const agent = new Agent(session);
    await Promise.all([1, 2, 3].map(() => agent.com.atproto.server.getSession()));
    return { ok: true };
  }

  /** Calls the user's PDS through the restored OAuth session. */
  @Get('session')
  async session(@AtProtoSession() session: OAuthSession) {
    const res = await session.fetchHandler('/xrpc/com.atproto.server.getSession');
    return { status: res.status, body: (await res.json()) as { did: string; handle: string } };
  }
}

@Controller()
class HealthController {
  @Public()
  @Get('health')
  health(@AtProtoDid() did: string | undefined) {
    return { ok: true, did: did ?? null };
  }
}

/** A Nest logger that keeps every line (all levels) for assertions, and prints warnings and errors. */
export class CapturingLogger extends ConsoleLogger {
  readonly lines: string[] = [];
  protected override printMessages(
    messages: unknown[],
    context?: string,
    logLevel?: LogLevel,
    writeStreamType?: 'stdout' | 'stderr',
    errorStack?: unknown,
  ): void {
    for (const m of messages) {
      this.lines.push(
        `${logLevel} [${context}] ${m instanceof Error ? `${m.message}\n${m.stack}` : typeof m === 'string' ? m : JSON.stringify(m)}`,
      );
    }
    if (errorStack) this.lines.push(`${logLevel} [${context}] ${String(errorStack)}`);
    if (logLevel === 'error' || logLevel === 'warn') {
      super.printMessages(messages, context, logLevel, writeStreamType, errorStack);
    }
  }
}

export interface TestApp {
  app: INestApplication;
  /** Every log line the app wrote, all levels. */
  logs: string[];
  /** `http://127.0.0.1:PORT` of the listener. */
  url: string;
  dataSource: DataSource;
  close(): Promise<void>;
}

const signingKeys = new Map<string, Promise<Record<string, unknown>>>();

/**
 * A signing key for the confidential client (ES256). One per kid per test process: the PDS
 * caches the client's JWKS by client_id, and every test app uses the same client_id.
 */
export function testSigningKey(kid = 'k1'): Promise<Record<string, unknown>> {
  let key = signingKeys.get(kid);
  if (!key) {
    key = JoseKey.generate(['ES256'], kid).then(
      (k) => k.privateJwk as unknown as Record<string, unknown>,
    );
    signingKeys.set(kid, key);
  }
  return key;
}

/**
 * Boots a NestJS app with AtProtoModule on `database`, talking to `pds`, listening on
 * loopback, with `https://app.e2e.internal` forwarded to it for the PDS's fetches.
 */
export async function startTestApp(
  pds: TestPds,
  database: DataSourceOptions,
  overrides: Partial<AtProtoModuleOptions> & AtProtoModuleExtras = {},
  /** Controllers of the test's own, next to the shared ones. */
  controllers: Type[] = [],
): Promise<TestApp> {
  const options: AtProtoModuleOptions & AtProtoModuleExtras = {
    publicUrl: APP_ORIGIN,
    clientName: 'e2e',
    keys: [await testSigningKey()],
    encryption: { activeKeyId: 'e2e', keys: { e2e: randomKey() } },
    handleResolver: pds.url,
    plcDirectoryUrl: pds.plcUrl,
    allowHttpServers: true,
    // Exactly this test's PDS and PLC: every other private address stays refused.
    dangerouslyAllowPrivateHosts: [new URL(pds.url).host, new URL(pds.plcUrl).host],
    ...overrides,
  };
  @Module({
    imports: [
      TypeOrmModule.forRoot({
        ...database,
        entities: [...atProtoEntities],
        migrations: atProtoMigrations(),
        migrationsRun: true,
      } as DataSourceOptions),
      AtProtoModule.forRoot(options) as DynamicModule,
    ],
    controllers: [MeController, HealthController, ...controllers],
  })
  class E2eAppModule {}

  const logger = new CapturingLogger();
  logger.setLogLevels(['log', 'error', 'warn', 'debug', 'verbose', 'fatal']);
  // A boot error is thrown to the test (Nest's default aborts the process).
  const app = await NestFactory.create(E2eAppModule, { logger, abortOnError: false });
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  const restoreFetch = forwardOriginToLocal(APP_ORIGIN, url);
  const dataSource = app.get<DataSource>((await import('typeorm')).DataSource);
  return {
    app,
    logs: logger.lines,
    url,
    dataSource,
    close: async () => {
      restoreFetch();
      await app.close();
    },
  };
}
