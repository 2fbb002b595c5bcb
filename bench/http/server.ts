/**
 * One server process of the HTTP benchmark (docs/benchmarks.md): the variant named in
 * `BENCH_SERVER` (see variants.ts) as a NestJS 12 app on Express, listening on a free
 * loopback port. Started by main.ts with an IPC channel: it reports when it is ready (with a
 * credential of its own making), answers `stats` with its CPU time, request count, event-loop
 * use and garbage collections, and exits on `exit` or when the driver goes away.
 * @internal
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { Session } from 'node:inspector/promises';
import { createHook } from 'node:async_hooks';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import {
  type CanActivate,
  Controller,
  type DynamicModule,
  type ExecutionContext,
  Get,
  Injectable,
  type INestApplication,
  Req,
  UnauthorizedException,
} from '@nestjs/common';
import { APP_GUARD, NestFactory } from '@nestjs/core';
import { AuthGuard, PassportModule, PassportStrategy } from '@nestjs/passport';
import { TypeOrmModule } from '@nestjs/typeorm';
import { RedisStore } from 'connect-redis';
import type { Request } from 'express';
import session from 'express-session';
import { SignJWT } from 'jose';
import { ExtractJwt, Strategy as JwtStrategyBase } from 'passport-jwt';
import { createClient } from 'redis';
import type { Logger } from 'typeorm';
import {
  AppSessionService,
  AT_PROTO_OPTIONS,
  AtProtoApiKeyService,
  AtProtoCredentials,
  AtProtoDid,
  AtProtoModule,
  atProtoEntities,
  Public,
} from 'nestjs-atproto-auth';
import { NativeTokens } from '../../lib/native/native-tokens.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import {
  BENCH_DID,
  type ControlMessage,
  type Headers,
  type HeapProfileNode,
  type MemoryMessage,
  type ReadyMessage,
  type ServerConfig,
  type StatsMessage,
  VARIANTS,
} from './variants.js';

const config = JSON.parse(process.env.BENCH_SERVER ?? '{}') as ServerConfig;
const spec = VARIANTS.find((v) => v.id === config.variant);
if (!spec || !process.send) {
  console.error('server.ts is started by bench/http/main.ts (npm run bench)');
  process.exit(2);
}
const send = (message: object) => process.send!(message);

// Optional diagnostics for the profile run: promises created per request. An async hook
// slows every promise down, so it is only installed when asked for.
let promises = 0;
if (process.env.BENCH_COUNT_PROMISES === '1') {
  createHook({
    init(_id, type) {
      if (type === 'PROMISE') promises++;
    },
  }).enable();
}

// --- the variants -----------------------------------------------------------------------

/** The constant the open routes answer with: the same body size as a guarded answer. */
const open = () => ({ did: BENCH_DID });

@Controller()
class OpenController {
  @Get('me')
  me() {
    return open();
  }
}

/** The floor of any Nest guard: one header read. */
@Injectable()
class CookiePresentGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    if (!context.switchToHttp().getRequest<Request>().headers.cookie) {
      throw new UnauthorizedException();
    }
    return true;
  }
}

const JWT_SECRET = randomBytes(32).toString('base64url');

/** passport-jwt as the NestJS documentation sets it up, with the algorithm pinned. */
@Injectable()
class JwtStrategy extends PassportStrategy(JwtStrategyBase) {
  constructor() {
    super({
      jwtFromRequest: ExtractJwt.fromAuthHeaderAsBearerToken(),
      secretOrKey: JWT_SECRET,
      algorithms: ['HS256'],
    });
  }

  validate(payload: { sub: string }): { did: string } {
    return { did: payload.sub };
  }
}

@Controller()
class UserController {
  @Get('me')
  me(@Req() req: Request & { user?: { did: string } }) {
    return { did: req.user!.did };
  }
}

/** express-session's guard: the session holds the DID once signed in. */
@Injectable()
class SessionGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    if (!context.switchToHttp().getRequest<Request>().session?.did) {
      throw new UnauthorizedException();
    }
    return true;
  }
}

declare module 'express-session' {
  interface SessionData {
    did?: string;
  }
}

@Controller()
class SessionController {
  @Get('me')
  me(@Req() req: Request) {
    return { did: req.session.did };
  }
}

@Controller()
class AtProtoController {
  @Get('me')
  me(@AtProtoDid() did: string) {
    return { did };
  }
}

@Controller()
class AtProtoPublicController {
  @Public()
  @Get('me')
  me() {
    return open();
  }
}

@Controller()
class AtProtoApiKeyController {
  @AtProtoCredentials({ allow: ['api-key'] })
  @Get('me')
  me(@AtProtoDid() did: string) {
    return { did };
  }
}

const TOKEN_SECRET = randomBytes(32).toString('base64');

/**
 * Counts the SQL statements TypeORM runs (it calls `logQuery` for every one, whatever the
 * logging options): how often a "cache hit" variant still reads the database.
 */
let queries = 0;
/**
 * Reads of one app session by id: what the guard does on a miss of its cache (the
 * revocation cursor also reads the table, by `revoked_at`, and is not one).
 */
let sessionReads = 0;
const countingLogger: Logger = {
  logQuery: (query) => {
    queries++;
    if (
      query.startsWith('SELECT') &&
      query.includes('"atproto_app_session"') &&
      !query.includes('"revoked_at" >')
    ) {
      sessionReads++;
    }
  },
  logQueryError: (error) => console.error('query failed:', error),
  logQuerySlow: () => undefined,
  logSchemaBuild: () => undefined,
  logMigration: () => undefined,
  log: () => undefined,
};

function atProtoModule(controller: new () => object): DynamicModule {
  return {
    module: class AtProtoBenchModule {},
    imports: [
      TypeOrmModule.forRoot({
        ...config.database,
        entities: [...atProtoEntities],
        // The driver migrated and seeded the database before any server started.
        migrationsRun: false,
        logger: countingLogger,
      } as never),
      AtProtoModule.forRoot({
        publicUrl: 'http://127.0.0.1:3999',
        encryption: { activeKeyId: 'k', keys: { k: randomBytes(32).toString('base64') } },
        appSession: {
          ...(spec!.cacheTtl === undefined ? {} : { cacheTtl: spec!.cacheTtl }),
          ...config.appSession,
        },
        // Cleanup's own cost is not what this benchmark measures (and would hit the
        // seeded tables in the middle of a round).
        cleanup: { enabled: false },
        native: {
          redirectUris: ['http://127.0.0.1/cli'],
          tokenSecrets: { activeKid: 't', keys: { t: TOKEN_SECRET } },
          // The longest allowed: one access token lasts the whole run.
          accessTokenTtl: 3_600_000,
        },
      }),
    ],
    controllers: [controller],
  };
}

function rootModule(): DynamicModule {
  switch (spec!.id) {
    case 'unguarded':
      return { module: class UnguardedModule {}, controllers: [OpenController] };
    case 'noop-guard':
      return {
        module: class NoopGuardModule {},
        controllers: [OpenController],
        providers: [{ provide: APP_GUARD, useClass: CookiePresentGuard }],
      };
    case 'passport-jwt':
      return {
        module: class PassportJwtModule {},
        imports: [PassportModule],
        controllers: [UserController],
        providers: [JwtStrategy, { provide: APP_GUARD, useClass: AuthGuard('jwt') }],
      };
    case 'express-session':
      return {
        module: class ExpressSessionModule {},
        controllers: [SessionController],
        providers: [{ provide: APP_GUARD, useClass: SessionGuard }],
      };
    case 'atproto-public':
      return atProtoModule(AtProtoPublicController);
    case 'api-key-hit-pg':
      return atProtoModule(AtProtoApiKeyController);
    default:
      return atProtoModule(AtProtoController);
  }
}

// --- credentials --------------------------------------------------------------------------

interface Credentials {
  valid: Headers;
  forged?: Headers;
}

async function atProtoCredentials(app: INestApplication): Promise<Credentials> {
  const options = app.get<ResolvedAtProtoOptions>(AT_PROTO_OPTIONS);
  if (spec!.id === 'atproto-public') return { valid: {} };
  if (spec!.id === 'api-key-hit-pg') {
    const { key } = await app.get(AtProtoApiKeyService).create(BENCH_DID, { name: 'bench' });
    // Same prefix and length, another secret: its checksum fails.
    const forged = options.apiKeys.prefix + 'x'.repeat(key.length - options.apiKeys.prefix.length);
    return {
      valid: { authorization: `Bearer ${key}` },
      forged: { authorization: `Bearer ${forged}` },
    };
  }
  const { token, session: appSession } = await app.get(AppSessionService).create(BENCH_DID);
  if (spec!.id === 'bearer-hit-pg') {
    // A native app's access token for that device, signed as the token endpoint signs it.
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      did: BENCH_DID,
      sid: appSession.id,
      jti: randomBytes(16).toString('base64url'),
      iat: now,
      exp: now + 3600,
    };
    const access = await new NativeTokens(options.native!, options.publicUrl).signAccess(claims);
    // Same claims and kid, signed with another secret.
    const other = { ...options.native!, secrets: new Map([['t', randomBytes(32)]]) };
    const forged = await new NativeTokens(other, options.publicUrl).signAccess(claims);
    return {
      valid: { authorization: `Bearer ${access}` },
      forged: { authorization: `Bearer ${forged}` },
    };
  }
  const name = options.cookie.sessionName;
  return {
    valid: { cookie: `${name}=${token}` },
    forged: { cookie: `${name}=${randomBytes(32).toString('base64url')}` },
  };
}

async function jwtFor(secret: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(BENCH_DID)
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(new TextEncoder().encode(secret));
}

/**
 * Resident memory by kind of mapping (Linux `/proc/self/smaps`, bytes): the C heap
 * (`[heap]`, what malloc grows with brk), anonymous mappings (V8's heap pages, the stacks,
 * malloc's large blocks and other threads' arenas) and mapped files (code of node, of
 * native addons, shared libraries). Undefined elsewhere.
 */
function residentByMapping(): MemoryMessage['rssParts'] {
  let text: string;
  try {
    text = readFileSync('/proc/self/smaps', 'utf8');
  } catch {
    return undefined;
  }
  const parts = { cHeap: 0, anonymous: 0, files: 0 };
  let kind: keyof typeof parts = 'anonymous';
  for (const line of text.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      const name = header[1]!;
      kind =
        name === '[heap]' ? 'cHeap' : name === '' || name.startsWith('[') ? 'anonymous' : 'files';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) parts[kind] += Number(rss[1]) * 1024;
  }
  return parts;
}

// --- boot ---------------------------------------------------------------------------------

async function main(): Promise<void> {
  const app = await NestFactory.create(rootModule(), { logger: ['error'] });
  let closeRedis: (() => Promise<unknown>) | undefined;
  if (spec!.id === 'express-session') {
    const client = createClient({ url: config.redisUrl });
    await client.connect();
    closeRedis = () => client.close();
    app.use(
      session({
        store: new RedisStore({ client, prefix: config.redisPrefix }),
        secret: randomBytes(32).toString('base64url'),
        resave: false,
        saveUninitialized: false,
        cookie: { httpOnly: true, sameSite: 'lax', maxAge: 86_400_000 },
      }),
    );
    // Signs in (outside Nest's router, so no guard): how the driver gets a session cookie.
    app.getHttpAdapter().post('/login', (req: Request, res: { end(): void }) => {
      req.session.did = BENCH_DID;
      res.end();
    });
  }
  await app.listen(0, '127.0.0.1');
  const server = app.getHttpServer() as Server;
  let requests = 0;
  server.on('request', () => requests++);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  let credentials: Credentials;
  switch (spec!.id) {
    case 'unguarded':
      credentials = { valid: {} };
      break;
    case 'noop-guard':
      credentials = { valid: { cookie: 'any=1' } };
      break;
    case 'passport-jwt':
      credentials = {
        valid: { authorization: `Bearer ${await jwtFor(JWT_SECRET)}` },
        forged: { authorization: `Bearer ${await jwtFor(randomBytes(32).toString('base64url'))}` },
      };
      break;
    case 'express-session': {
      const res = await fetch(`http://127.0.0.1:${port}/login`, { method: 'POST' });
      const cookie = res.headers.getSetCookie()[0]?.split(';')[0];
      if (!cookie) throw new Error('express-session set no cookie');
      const [name] = cookie.split('=');
      credentials = {
        valid: { cookie },
        forged: { cookie: `${name}=s%3A${randomBytes(24).toString('base64url')}.x` },
      };
      break;
    }
    default:
      credentials = await atProtoCredentials(app);
  }

  const gc = { count: 0, ms: 0 };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gc.count++;
      gc.ms += entry.duration;
    }
  }).observe({ entryTypes: ['gc'] });

  let inspector: Session | undefined;
  process.on('message', (message: ControlMessage) => {
    void (async () => {
      switch (message.type) {
        case 'stats': {
          const elu = performance.eventLoopUtilization();
          const stats: StatsMessage = {
            type: 'stats',
            cpu: process.cpuUsage(),
            requests,
            queries,
            sessionReads,
            elu: { idle: elu.idle, active: elu.active },
            gc: { ...gc },
            hrtimeUs: Number(process.hrtime.bigint() / 1000n),
            ...(process.env.BENCH_COUNT_PROMISES === '1' ? { promises } : {}),
          };
          send(stats);
          break;
        }
        case 'memory': {
          // Twice: the first full collection may leave what only finalizers released.
          const gcForced = typeof globalThis.gc === 'function';
          for (let i = 0; gcForced && i < 2; i++) {
            globalThis.gc!({ type: 'major', execution: 'sync' });
          }
          const m = process.memoryUsage();
          const rssParts = residentByMapping();
          const memory: MemoryMessage = {
            type: 'memory',
            rss: m.rss,
            heapUsed: m.heapUsed,
            heapTotal: m.heapTotal,
            external: m.external,
            arrayBuffers: m.arrayBuffers,
            gcForced,
            ...(rssParts ? { rssParts } : {}),
          };
          send(memory);
          break;
        }
        case 'heap-start':
          // Every allocation sampled, the ones already collected included: what a request
          // allocates, not what survives it.
          inspector = new Session();
          inspector.connect();
          await inspector.post('HeapProfiler.startSampling', {
            samplingInterval: 1024,
            includeObjectsCollectedByMajorGC: true,
            includeObjectsCollectedByMinorGC: true,
          });
          send({ type: 'heap-started' });
          break;
        case 'heap-stop': {
          const { profile } = (await inspector!.post('HeapProfiler.stopSampling')) as {
            profile: { head: HeapProfileNode };
          };
          inspector!.disconnect();
          send({ type: 'heap', profile: profile.head });
          break;
        }
        case 'exit':
          await app.close();
          await closeRedis?.();
          // process.exit() writes the `--cpu-prof` profile; a signal would not.
          process.exit(0);
      }
    })();
  });
  // The driver is gone (finished, crashed or interrupted): never outlive it.
  process.on('disconnect', () => process.exit(0));

  const ready: ReadyMessage = { type: 'ready', port, did: BENCH_DID, ...credentials };
  send(ready);
}

main().catch((error: unknown) => {
  console.error(`bench server ${config.variant} failed to start:`, error);
  process.exit(1);
});
