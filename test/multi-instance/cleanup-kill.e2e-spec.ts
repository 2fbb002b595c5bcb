/**
 * Cleanup with BullMQ across processes: an app instance killed with SIGKILL in the middle
 * of a cleanup job leaves consistent tables (every batch is one statement), and another
 * instance's next scheduled job finishes the work: every expired row gone, every live row
 * kept. The instances are the sample app as separate OS processes, on a PostgreSQL database
 * and a redis-server of the test's own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { AT_PROTO_CLEANUP_QUEUE } from '../../lib/cleanup/bullmq/cleanup-queue.module.js';
import { createTestDatabase } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import { freePort, OwnRedis } from '../support/redis-server.js';
import { buildSample, ROOT } from './support/cluster.js';

const EXPIRED = 40_000;
const LIVE = 500;

let dir: string;
let main: string;
let redis: OwnRedis;
let ds: DataSource;
let dropDb: () => Promise<void>;
let databaseUrl: string;
const children: ChildProcess[] = [];
const encKey = randomKey();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'atp-cleanup-kill-'));
  main = await buildSample(dir);
  redis = await OwnRedis.start();
  const db = await createTestDatabase('postgres', 'cleanup_kill');
  dropDb = db.drop;
  databaseUrl = `postgres://postgres@127.0.0.1:5432/${db.name}`;
  ds = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
  });
  await ds.initialize();
  await ds.runMigrations();
}, 180_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await ds?.destroy();
  await dropDb?.();
  await redis?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function startInstance(): Promise<ChildProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, [main], {
    cwd: ROOT,
    stdio: 'ignore',
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      PORT: String(port),
      PUBLIC_URL: `http://127.0.0.1:${port}`,
      DATABASE_URL: databaseUrl,
      REDIS_URL: redis.url,
      ATPROTO_BULLMQ: '1',
      ATPROTO_ENC_KEY: encKey,
      CLEANUP_INTERVAL_MS: '1000',
      CLEANUP_BATCH_SIZE: '100',
      SAMPLE_DATA_DIR: dir,
    },
  });
  children.push(child);
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error('the instance exited at boot');
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return child;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error('the instance did not start');
}

async function stateCount(where = ''): Promise<number> {
  const [row] = (await ds.query(
    `SELECT COUNT(*) AS n FROM atproto_oauth_state ${where}`,
  )) as Array<{
    n: string;
  }>;
  return Number(row?.n);
}

it('an instance killed mid-job leaves whole batches; the next job elsewhere finishes', async () => {
  const now = Date.now();
  await ds.query(
    `INSERT INTO atproto_oauth_state ("key", "data", created_at, expires_at)
     SELECT 'state-' || n, '"x"', ${now - 60_000},
            CASE WHEN n <= ${EXPIRED} THEN ${now - 1000} ELSE ${now + 3_600_000} END
     FROM generate_series(1, ${EXPIRED + LIVE}) AS s(n)`,
  );
  const queue = new Queue(AT_PROTO_CLEANUP_QUEUE, {
    connection: { host: '127.0.0.1', port: redis.port },
    prefix: 'atproto:bull',
  });
  try {
    const a = await startInstance();
    // Wait until A's job is running and has deleted some batches, then kill it outright.
    for (let i = 0; ; i++) {
      const counts = await queue.getJobCounts('active');
      if ((counts.active ?? 0) > 0 && (await stateCount()) <= EXPIRED + LIVE - 1000) break;
      if (i > 600) throw new Error('no cleanup job started');
      await sleep(20);
    }
    a.kill('SIGKILL');
    await new Promise((r) => a.once('exit', r));
    const left = await stateCount();
    expect(left).toBeGreaterThan(LIVE);
    expect(left).toBeLessThan(EXPIRED + LIVE);
    expect((EXPIRED + LIVE - left) % 100).toBe(0); // whole batches of 100, nothing half-done
    await sleep(1500);
    expect(await stateCount()).toBe(left); // nobody else is deleting

    // Another instance: its next scheduled job resumes where A stopped.
    await startInstance();
    for (let i = 0; (await stateCount()) > LIVE; i++) {
      if (i > 600) throw new Error(`cleanup did not finish: ${await stateCount()} rows left`);
      await sleep(100);
    }
    expect(await stateCount(`WHERE expires_at > ${now}`)).toBe(LIVE);
    expect(await stateCount()).toBe(LIVE);
  } finally {
    await queue.close();
  }
}, 180_000);
