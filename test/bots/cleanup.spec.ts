/**
 * Cleanup sweeps bot sessions whose refresh JWT has expired (a bot that is never used again
 * would otherwise keep its encrypted row for ever), reports each end once
 * (`bot-session-ended`, reason `expired`) and leaves live sessions alone, on SQLite,
 * PostgreSQL and MariaDB, through the module's public `runOnce()`.
 */
import { type INestApplicationContext, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import {
  type AtProtoEvent,
  AtProtoCleanupService,
  AtProtoEvents,
  AtProtoModule,
  atProtoEntities,
} from 'nestjs-atproto-auth';
import { type StoredBotSession, TypeOrmBotSessionStore } from '../../lib/bots/bot-session.store.js';
import { type Dialect, DIALECTS, migratedDataSource } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import { randomDid } from '../support/raw-sql.js';

function bot(did: string, expiresAt: number): StoredBotSession {
  return {
    did,
    handle: 'robot.example.com',
    pdsUrl: 'https://pds.example.com',
    accessJwt: 'eyJhbGciOiJIUzI1NiJ9.access.sig',
    refreshJwt: 'eyJhbGciOiJIUzI1NiJ9.refresh.sig',
    accessExpiresAt: null,
    expiresAt,
  };
}

describe.each(DIALECTS)('cleanup of bot sessions on %s', (dialect: Dialect) => {
  let close: (() => Promise<void>) | undefined;
  let ds: DataSource;
  let app: INestApplicationContext;

  beforeAll(async () => {
    const db = await migratedDataSource(dialect, 'bot_cleanup');
    ds = db.dataSource;
    close = db.close;
    @Module({
      imports: [
        TypeOrmModule.forRoot({ ...db.options, entities: [...atProtoEntities] } as never),
        AtProtoModule.forRoot({
          publicUrl: 'http://127.0.0.1:3999',
          encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
          cleanup: { enabled: false, batchSize: 2 },
        }),
      ],
    })
    class BotCleanupModule {}
    app = await NestFactory.createApplicationContext(BotCleanupModule, { logger: false });
  }, 120_000);
  afterAll(async () => {
    await app?.close();
    await close?.();
  });

  it('deletes the expired ones in batches, reports each end once, keeps the live ones', async () => {
    const store = new TypeOrmBotSessionStore(ds);
    const expired = [randomDid(), randomDid(), randomDid()];
    const live = randomDid();
    for (const did of expired) await store.set(bot(did, Date.now() - 1000));
    await store.set(bot(live, Date.now() + 86_400_000));
    const ended: AtProtoEvent[] = [];
    const subscription = app
      .get(AtProtoEvents)
      .events$.subscribe((e) => e.type === 'bot-session-ended' && ended.push(e));

    const result = await app.get(AtProtoCleanupService).runOnce();
    await new Promise((resolve) => setImmediate(resolve));
    subscription.unsubscribe();

    expect(result.botSessions).toBe(3);
    const left: Array<{ did: string }> = await ds.query('SELECT did FROM atproto_bot_session');
    expect(left.map((r) => r.did)).toEqual([live]);
    expect(ended.map((e) => (e as { did: string }).did).sort()).toEqual([...expired].sort());
    expect(ended.every((e) => (e as { reason?: string }).reason === 'expired')).toBe(true);
    expect((await app.get(AtProtoCleanupService).runOnce()).botSessions).toBe(0);
  });
});
