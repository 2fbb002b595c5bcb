/**
 * The database going away under a running app: guarded routes answer 503 (not 500) once the
 * store's retries are spent, and work again when it is back. The outage is real: the app
 * talks to PostgreSQL through a TCP proxy that the test cuts.
 */
import { Controller, Get, type INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import {
  AppSessionService,
  AtProtoDid,
  AtProtoModule,
  atProtoEntities,
  atProtoMigrations,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import {
  startFakeAuthorizationServer,
  type FakeAuthorizationServer,
} from '../e2e/support/fake-authorization-server.js';

@Controller()
class MeController {
  @Get('me')
  me(@AtProtoDid() did: string) {
    return { did };
  }
}

/** A TCP proxy to PostgreSQL that can be cut (every connection dropped, new ones refused). */
class CuttableProxy {
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  port = 0;

  async open(port = 0): Promise<void> {
    this.#server = createServer((client) => {
      const upstream = createConnection(5432, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => this.#server!.listen(port, '127.0.0.1', r));
    this.port = (this.#server.address() as { port: number }).port;
  }

  async cut(): Promise<void> {
    const closed = new Promise((r) => this.#server?.close(r));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }
}

describe('a database outage under a running app', () => {
  const proxy = new CuttableProxy();
  let app: INestApplication;
  let drop: () => Promise<void>;
  // A reachable AT Protocol server, so that a login gets as far as storing its state.
  let fake: FakeAuthorizationServer;

  beforeAll(async () => {
    fake = await startFakeAuthorizationServer();
    const db = await createTestDatabase('postgres', 'outage');
    drop = db.drop;
    await proxy.open();
    @Module({
      imports: [
        TypeOrmModule.forRoot({
          type: 'postgres',
          host: '127.0.0.1',
          port: proxy.port,
          username: 'postgres',
          database: db.name,
          entities: [...atProtoEntities],
          migrations: atProtoMigrations(),
          migrationsRun: true,
          extra: { connectionTimeoutMillis: 500 },
        }),
        AtProtoModule.forRoot({
          publicUrl: 'http://127.0.0.1:3999',
          encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
          appSession: { cacheTtl: 0 },
          storeRetry: { maxAttempts: 3, baseDelayMs: 20, maxElapsedMs: 300 },
          allowHttpServers: true,
          dangerouslyAllowPrivateHosts: [fake.host],
        }),
      ],
      controllers: [MeController],
    })
    class OutageModule {}
    app = await NestFactory.create(OutageModule, { logger: false });
    await app.listen(0, '127.0.0.1');
  });

  afterAll(async () => {
    await app?.close();
    await proxy.cut();
    await drop?.();
    await fake?.close();
  });

  it('answers 503 while the database is unreachable, and 200 once it is back', async () => {
    const { token } = await app.get(AppSessionService).create('did:plc:abcdefghijklmnopqrstuvwx');
    const me = () =>
      fetch(
        `${'http://127.0.0.1'}:${(app.getHttpServer().address() as { port: number }).port}/me`,
        {
          headers: { cookie: `atproto_session=${token}` },
        },
      );
    expect((await me()).status).toBe(200);
    const port = proxy.port;
    await proxy.cut();
    const down = await me();
    expect(down.status).toBe(503);
    expect(JSON.stringify(await down.json())).not.toContain(token);
    await proxy.open(port);
    expect((await me()).status).toBe(200);
  });

  it('answers 503 at /login and /callback while the database is unreachable, not 502 or 500', async () => {
    const base = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
    const port = proxy.port;
    await proxy.cut();
    try {
      const login = await fetch(`${base}/oauth/login?input=${encodeURIComponent(fake.origin)}`, {
        redirect: 'manual',
      });
      expect(login.status).toBe(503);
      const body = JSON.stringify(await login.json());
      expect(body).toMatch(/try again/i);
      expect(body).not.toMatch(/authorization server could not be reached/i);
      const callback = await fetch(`${base}/oauth/callback?state=some-state&code=some-code`, {
        redirect: 'manual',
      });
      expect(callback.status).toBe(503);
    } finally {
      await proxy.open(port);
    }
  });
});
