// One app instance of the multi-instance bot test, in a process of its own: AtProtoModule
// from the test's compiled build (BOT_DIST, the dist/index.js that buildSample wrote) on
// the test's PostgreSQL database and Redis, as an application context (no HTTP). The test
// drives it over the IPC channel of child_process.fork:
//   { id, op: 'login', identifier, password }   -> { id, ok, did }
//   { id, op: 'calls', did, n }                 -> { id, ok, statuses }  (n concurrent
//     com.atproto.server.getSession calls, each through a freshly restored session)
// Messages never carry the JWTs back; errors come back as { id, ok: false, code, reason }.
import { pathToFileURL } from 'node:url';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';

const lib = await import(pathToFileURL(process.env.BOT_DIST).href);
const config = JSON.parse(process.env.BOT_CONFIG);

class BotWorkerModule {}
Module({
  imports: [
    TypeOrmModule.forRoot({
      ...config.database,
      entities: [...lib.atProtoEntities],
      migrations: lib.atProtoMigrations(),
    }),
    lib.AtProtoModule.forRoot({
      publicUrl: 'http://127.0.0.1:9',
      encryption: { activeKeyId: 'mi', keys: { mi: config.encryptionKey } },
      handleResolver: config.pdsUrl,
      plcDirectoryUrl: config.plcUrl,
      allowHttpServers: true,
      dangerouslyAllowPrivateHosts: [new URL(config.pdsUrl).host, new URL(config.plcUrl).host],
      cleanup: { enabled: false },
      ...(config.redis ? { redis: config.redis } : {}),
    }),
  ],
})(BotWorkerModule);

const app = await NestFactory.createApplicationContext(BotWorkerModule, {
  logger: ['error', 'warn'],
});
const bots = app.get(lib.AtProtoBotSessionService);

async function run(message) {
  if (message.op === 'login') {
    const session = await bots.login(message.identifier, message.password);
    return { did: session.did };
  }
  if (message.op === 'calls') {
    const statuses = await Promise.all(
      Array.from({ length: message.n }, async () => {
        const session = await bots.restore(message.did);
        const res = await session.fetchHandler('/xrpc/com.atproto.server.getSession', {
          method: 'GET',
        });
        await res.body?.cancel();
        return res.status;
      }),
    );
    return { statuses };
  }
  throw new Error(`unknown op ${message.op}`);
}

process.on('message', (message) => {
  run(message).then(
    (result) => process.send({ id: message.id, ok: true, ...result }),
    (error) =>
      process.send({
        id: message.id,
        ok: false,
        name: error?.name,
        code: error?.code,
        reason: error?.reason,
        message: String(error?.message ?? error),
      }),
  );
});
process.on('disconnect', () => {
  app.close().finally(() => process.exit(0));
});
process.send({ ready: true });
