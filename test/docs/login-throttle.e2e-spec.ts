/**
 * The login rate limit docs/deployment.md shows (`@nestjs/throttler` on the module's login
 * routes only), in an app against the real local PDS: the first 10 logins of a client
 * answer their redirect to the authorization server, GET and POST counted together; the
 * next ones answer 429 without writing a state or reaching the PDS; other routes are not
 * limited. The module it uses is test/docs/fixtures/login-throttle.module.ts, and the
 * document shows that file, byte for byte.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Controller, Get, type INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { DataSource, DataSourceOptions } from 'typeorm';
import {
  AtProtoModule,
  Public,
  atProtoEntities,
  atProtoMigrations,
  type AtProtoModuleOptions,
} from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';
import { createTestDatabase } from '../support/databases.js';
import { AppBrowser } from '../e2e/support/app-client.js';
import {
  forwardOriginToLocal,
  startTestPds,
  type TestAccount,
  type TestPds,
} from '../e2e/support/pds.js';
import { APP_ORIGIN, testSigningKey } from '../e2e/support/test-app.js';
import { readDocBlocks } from './support/doc-blocks.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoDir = resolve(here, '..', '..');
const LIMIT = 10;

@Controller()
class HealthController {
  @Public()
  @Get('health')
  health() {
    return { ok: true };
  }
}

let pds: TestPds;
let alice: TestAccount;
let app: INestApplication;
let dataSource: DataSource;
let base: string;
let restoreFetch: () => void;
let dropDatabase: () => Promise<void>;

beforeAll(async () => {
  pds = await startTestPds();
  alice = await pds.createAccount('alice-throttle.test');
  const db = await createTestDatabase('sqlite', 'login_throttle');
  dropDatabase = db.drop;
  const options: AtProtoModuleOptions = {
    publicUrl: APP_ORIGIN,
    clientName: 'throttle',
    keys: [await testSigningKey()],
    encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
    handleResolver: pds.url,
    plcDirectoryUrl: pds.plcUrl,
    allowHttpServers: true,
    // The local PDS and PLC listen on loopback, which the OAuth client refuses otherwise.
    dangerouslyAllowPrivateHosts: [new URL(pds.url).host, new URL(pds.plcUrl).host],
  };

  // Imported once @nestjs/common has loaded: @nestjs/throttler is CommonJS and require()s
  // it, which Jest's ES module runtime refuses while the ES module is still being linked.
  const { LoginThrottleModule } = await import('./fixtures/login-throttle.module.js');

  @Module({
    imports: [
      TypeOrmModule.forRoot({
        ...db.options,
        entities: [...atProtoEntities],
        migrations: atProtoMigrations(),
        migrationsRun: true,
      } as DataSourceOptions),
      AtProtoModule.forRoot(options),
      LoginThrottleModule,
    ],
    controllers: [HealthController],
  })
  class ThrottledAppModule {}

  app = await NestFactory.create(ThrottledAppModule, { logger: ['error', 'warn'] });
  await app.listen(0, '127.0.0.1');
  base = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  restoreFetch = forwardOriginToLocal(APP_ORIGIN, base);
  dataSource = app.get<DataSource>((await import('typeorm')).DataSource);
});

afterAll(async () => {
  restoreFetch?.();
  await app?.close();
  await dropDatabase?.();
  await pds?.stop();
});

async function stateRows(): Promise<number> {
  const [row] = (await dataSource.query('SELECT COUNT(*) AS n FROM atproto_oauth_state')) as {
    n: unknown;
  }[];
  return Number(row?.n);
}

it('is the module docs/deployment.md shows', () => {
  const fixture = readFileSync(join(here, 'fixtures/login-throttle.module.ts'), 'utf8');
  const blocks = readDocBlocks(repoDir, 'docs/deployment.md').filter(
    (b) => b.attrs['file'] === 'src/login-throttle.module.ts',
  );
  expect(blocks).toHaveLength(1);
  expect(blocks[0]?.code).toBe(fixture);
});

it(`lets ${LIMIT} logins per client through, GET and POST together, then answers 429`, async () => {
  const browser = new AppBrowser(base);
  const answers: number[] = [];
  for (let i = 0; i < LIMIT; i++) {
    const res =
      i % 2 === 0
        ? await browser.get(`/oauth/login?input=${alice.handle}`)
        : await browser.post(
            '/oauth/login',
            new URLSearchParams({ input: alice.handle }).toString(),
            { 'content-type': 'application/x-www-form-urlencoded' },
          );
    answers.push(res.status);
    // Each one a real login: redirected to the PDS's authorization endpoint.
    expect(new URL(res.location ?? '', base).origin).toBe(pds.url);
  }
  expect(answers).toEqual(Array.from({ length: LIMIT }, (_, i) => (i % 2 === 0 ? 302 : 303)));
  expect(await stateRows()).toBe(LIMIT);

  const get = await browser.get(`/oauth/login?input=${alice.handle}`);
  const post = await browser.post(
    '/oauth/login',
    new URLSearchParams({ input: alice.handle }).toString(),
    { 'content-type': 'application/x-www-form-urlencoded' },
  );
  expect([get.status, post.status]).toEqual([429, 429]);
  expect(get.headers['retry-after-login']).toBeDefined();
  // Nor around it: another spelling of the path is the same route, or none.
  for (const path of ['/oauth/login/', '/OAuth/Login', '/oauth//login']) {
    const res = await browser.get(`${path}?input=${alice.handle}`);
    expect({ path, limited: [404, 429].includes(res.status) }).toEqual({ path, limited: true });
  }
  // Refused before the module ran: no state written, nothing asked of the PDS.
  expect(await stateRows()).toBe(LIMIT);
});

it('does not limit the other routes', async () => {
  const browser = new AppBrowser(base);
  for (let i = 0; i < LIMIT + 5; i++) {
    expect((await browser.get('/health')).status).toBe(200);
    expect((await browser.get('/oauth/client-metadata.json')).status).toBe(200);
  }
});
