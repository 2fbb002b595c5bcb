/**
 * The guard's hot path (docs/benchmarks.md): requests per second of one Nest app on
 * PostgreSQL, for an open route and for a guarded route with the app-session cache on
 * (default, 2 s) and off, with a cookie, a native app's bearer access token, and an API key.
 * Same process, same HTTP client, rounds alternating; the ratio of medians against the open
 * route is reported.
 */
import { Controller, Get, type INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { randomBytes } from 'node:crypto';
import {
  AppSessionService,
  AT_PROTO_OPTIONS,
  AtProtoApiKeyService,
  AtProtoCredentials,
  AtProtoDid,
  AtProtoModule,
  atProtoEntities,
  atProtoMigrations,
  Public,
} from 'nestjs-atproto-auth';
import { NativeTokens } from '../lib/native/native-tokens.js';
import type { ResolvedAtProtoOptions } from '../lib/options/resolved-options.js';
import { createTestDatabase } from '../test/support/databases.js';
import { randomKey } from '../test/support/key-ring.js';

@Controller()
class BenchController {
  @Public()
  @Get('open')
  open() {
    return { ok: true };
  }

  @Get('me')
  me(@AtProtoDid() did: string) {
    return { did };
  }

  @AtProtoCredentials({ allow: ['api-key'] })
  @Get('bot')
  bot(@AtProtoDid() did: string) {
    return { did };
  }
}

const TOKEN_SECRET = randomBytes(32).toString('base64');
const CONCURRENCY = 16;
const PER_ROUND = 2000;
const ROUNDS = 5;

async function boot(database: object, cacheTtl: number): Promise<INestApplication> {
  @Module({
    imports: [
      TypeOrmModule.forRoot({
        ...database,
        entities: [...atProtoEntities],
        migrations: atProtoMigrations(),
        migrationsRun: true,
      } as never),
      AtProtoModule.forRoot({
        publicUrl: 'http://127.0.0.1:3999',
        encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
        appSession: { cacheTtl },
        native: {
          redirectUris: ['http://127.0.0.1/cli'],
          tokenSecrets: { activeKid: 't', keys: { t: TOKEN_SECRET } },
        },
      }),
    ],
    controllers: [BenchController],
  })
  class BenchModule {}
  const app = await NestFactory.create(BenchModule, { logger: ['error'] });
  await app.listen(0, '127.0.0.1');
  return app;
}

async function throughput(
  url: string,
  headers: Record<string, string>,
  dispatcher: Agent,
): Promise<number> {
  let left = PER_ROUND;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (left-- > 0) {
        const res = await request(url, { dispatcher, headers });
        await res.body.dump();
        if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
      }
    }),
  );
  return PER_ROUND / ((performance.now() - t0) / 1000);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

it('guard hot path: open route vs guarded route (cookie, bearer token, API key) with and without caches', async () => {
  const db = await createTestDatabase('postgres', 'bench_guard');
  const cached = await boot(db.options, 2000);
  const uncached = await boot(db.options, 0);
  const dispatcher = new Agent({ connections: CONCURRENCY });
  try {
    const did = 'did:plc:abcdefghijklmnopqrstuvwx';
    const { token, session } = await cached.get(AppSessionService).create(did);
    const cookie = { cookie: `atproto_session=${token}` };
    // A native app's access token for that device, signed as the token endpoint signs it.
    const options = cached.get<ResolvedAtProtoOptions>(AT_PROTO_OPTIONS);
    const now = Math.floor(Date.now() / 1000);
    const access = await new NativeTokens(options.native!, options.publicUrl).signAccess({
      did,
      sid: session.id,
      jti: randomBytes(16).toString('base64url'),
      iat: now,
      exp: now + 3600,
    });
    const bearer = { authorization: `Bearer ${access}` };
    const { key } = await cached.get(AtProtoApiKeyService).create(did, { name: 'bench' });
    const apiKey = { authorization: `Bearer ${key}` };
    const [c, u] = [await cached.getUrl(), await uncached.getUrl()];
    const variants: Array<[string, string, Record<string, string>]> = [
      ['open route', `${c}/open`, {}],
      ['cookie, cache on (2 s)', `${c}/me`, cookie],
      ['cookie, cache off', `${u}/me`, cookie],
      ['bearer token, caches on', `${c}/me`, bearer],
      ['bearer token, session cache off', `${u}/me`, bearer],
      ['API key, cache on', `${c}/bot`, apiKey],
      ['API key, cache off', `${u}/bot`, apiKey],
    ];
    for (const [, url, h] of variants) await throughput(url, h, dispatcher); // warm-up
    const results = new Map<string, number[]>(variants.map(([label]) => [label, []]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const [label, url, h] of variants)
        results.get(label)!.push(await throughput(url, h, dispatcher));
    }
    const open = median(results.get('open route')!);
    for (const [label] of variants) {
      const rps = median(results.get(label)!);
      console.log(
        `guard: ${label}: ${rps.toFixed(0)} req/s, ${(rps / open).toFixed(2)}× the open route`,
      );
    }
  } finally {
    await dispatcher.close();
    await cached.close();
    await uncached.close();
    await db.drop();
  }
});
