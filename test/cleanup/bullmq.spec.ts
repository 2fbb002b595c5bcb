/**
 * Cleanup scheduled with BullMQ: three app instances share one Redis; the job scheduler
 * creates one job per tick and exactly one instance runs it.
 */
import { type INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import type { DataSource } from 'typeorm';
import { AtProtoModule, atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { AT_PROTO_CLEANUP_QUEUE } from '../../lib/cleanup/bullmq/cleanup-queue.module.js';
import { createTestDatabase } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import { OwnRedis } from '../support/redis-server.js';

const INTERVAL = 1000;

describe('cleanup with a BullMQ job scheduler', () => {
  let redis: OwnRedis;
  let drop: () => Promise<void>;
  const apps: INestApplication[] = [];
  /** When the first instance started booting: its scheduler may run jobs from then on. */
  let bootStartedAt = 0;

  beforeAll(async () => {
    redis = await OwnRedis.start();
    const db = await createTestDatabase('postgres', 'bullmq');
    drop = db.drop;
    const encryption = { activeKeyId: 'k', keys: { k: randomKey() } };
    bootStartedAt = Date.now();
    for (let i = 0; i < 3; i++) {
      @Module({
        imports: [
          TypeOrmModule.forRoot({
            ...db.options,
            entities: [...atProtoEntities],
            migrations: atProtoMigrations(),
            migrationsRun: i === 0,
          }),
          AtProtoModule.forRootAsync({
            bullmq: true,
            useFactory: async () => ({
              publicUrl: 'http://127.0.0.1:3999',
              encryption,
              redis: redis.url,
              cleanup: { enabled: true, interval: INTERVAL, batchSize: 7 },
            }),
          }),
        ],
      })
      class InstanceModule {}
      const app = await NestFactory.create(InstanceModule, { logger: ['error'] });
      await app.init();
      apps.push(app);
    }
  }, 60_000);

  afterAll(async () => {
    for (const app of apps) await app.close();
    await drop?.();
    await redis?.stop();
  });

  it('runs each tick once across three instances, and deletes what expired', async () => {
    const ds = apps[0]!.get<DataSource>((await import('typeorm')).DataSource);
    const now = Date.now();
    for (let i = 0; i < 20; i++) {
      await ds.query(
        `INSERT INTO atproto_oauth_state ("key", "data", created_at, expires_at) VALUES ($1, '"x"', $2, $3)`,
        [`k${i}`, now, i < 15 ? now - 1000 : now + 3_600_000],
      );
    }
    const queue = new Queue(AT_PROTO_CLEANUP_QUEUE, {
      connection: { host: '127.0.0.1', port: redis.port },
      prefix: 'atproto:bull',
    });
    try {
      await sleep(INTERVAL * 4.5);
      const completed = await queue.getJobs(['completed']);
      // Jobs count from the first instance's boot (the scheduler starts then), not from the
      // start of the wait: a slow boot of the other instances leaves ticks before it.
      const ticks = Math.ceil((Date.now() - bootStartedAt) / INTERVAL) + 1;
      // One scheduler for the three instances: about one job per interval, not three.
      expect(completed.length).toBeGreaterThanOrEqual(3);
      expect(completed.length).toBeLessThanOrEqual(ticks);
      const schedulers = await queue.getJobSchedulers();
      expect(schedulers).toHaveLength(1);
      const deleted = completed.reduce(
        (n, j) => n + (j.returnvalue as { states: number }).states,
        0,
      );
      expect(deleted).toBe(15); // every expired row deleted exactly once
      const [left] = (await ds.query('SELECT COUNT(*) AS n FROM atproto_oauth_state')) as Array<{
        n: string;
      }>;
      expect(Number(left?.n)).toBe(5);
    } finally {
      await queue.close();
    }
  }, 60_000);
});
