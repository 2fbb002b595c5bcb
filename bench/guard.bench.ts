/**
 * The guard's hot path (docs/benchmarks.md): requests per second of one Nest app on
 * PostgreSQL, for an open route and for a guarded route with the app-session cache on
 * (default, 2 s) and off. Same process, same HTTP client, rounds alternating; the ratio of
 * medians against the open route is reported.
 */
import { Controller, Get, type INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import {
  AppSessionService,
  AtProtoDid,
  AtProtoModule,
  atProtoEntities,
  atProtoMigrations,
  Public,
} from 'nestjs-atproto-auth';
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
}

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
  cookie: string | undefined,
  dispatcher: Agent,
): Promise<number> {
  let left = PER_ROUND;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (left-- > 0) {
        const res = await request(url, { dispatcher, headers: cookie ? { cookie } : {} });
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

it('guard hot path: open route vs guarded route with and without the app-session cache', async () => {
  const db = await createTestDatabase('postgres', 'bench_guard');
  const cached = await boot(db.options, 2000);
  const uncached = await boot(db.options, 0);
  const dispatcher = new Agent({ connections: CONCURRENCY });
  try {
    const { token } = await cached
      .get(AppSessionService)
      .create('did:plc:abcdefghijklmnopqrstuvwx');
    const cookie = `atproto_session=${token}`;
    const variants: Array<[string, string, string | undefined]> = [
      ['open route', `${await cached.getUrl()}/open`, undefined],
      ['guarded, cache on (2 s)', `${await cached.getUrl()}/me`, cookie],
      ['guarded, cache off', `${await uncached.getUrl()}/me`, cookie],
    ];
    for (const [, url, c] of variants) await throughput(url, c, dispatcher); // warm-up
    const results = new Map<string, number[]>(variants.map(([label]) => [label, []]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const [label, url, c] of variants)
        results.get(label)!.push(await throughput(url, c, dispatcher));
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
