/**
 * Benchmark, not a test (nothing asserted on timing): how long after a revocation on
 * instance A instance B answers 401, over many trials, with two app processes (the same
 * as cross-instance.e2e-spec.ts) on one PostgreSQL database:
 * - through the Redis channel (a redis-server of the benchmark's own);
 * - through the database cursor alone (no Redis), what every failure of the channel falls
 *   back to.
 * Each trial: a session created on A and cached on B, then `POST /control/revoke` to A,
 * timed from just before that request until B's first 401 (B polled every 5 ms), so the
 * figure includes A's own write.
 *
 * Run:
 *   node --experimental-vm-modules node_modules/jest/bin/jest.js --runInBand \
 *     --roots '<rootDir>/test/invalidation' --testMatch '**\/*.bench.ts' --testTimeout 600000
 * TRIALS (default 100) and CURSOR_TRIALS (default 30) change the counts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { OwnRedis } from '../support/redis-server.js';
import {
  encryptionKey,
  Instance,
  logDir,
  sharedDatabase,
  type SharedDatabase,
  until,
} from './support/instances.js';

const TRIALS = Number(process.env.TRIALS ?? 100);
const CURSOR_TRIALS = Number(process.env.CURSOR_TRIALS ?? 30);
const DID = 'did:plc:latencybench234567abcdefg';

let db: SharedDatabase;
let logs: Awaited<ReturnType<typeof logDir>>;
let redis: OwnRedis;

beforeAll(async () => {
  [db, logs, redis] = await Promise.all([sharedDatabase('inv_bench'), logDir(), OwnRedis.start()]);
}, 120_000);
afterAll(async () => {
  await redis?.stop();
  await db?.drop();
  await logs?.remove();
});

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function measure(label: string, redisUrl: string | undefined, trials: number) {
  const env = {
    DATABASE_URL: db.url,
    ENC_KEY: encryptionKey(),
    CACHE_TTL: '10000',
    INVALIDATED_CACHE_TTL: '300000',
    ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
  };
  const log = logs.log(label.replace(/\W+/g, '-'));
  const [a, b] = await Promise.all([Instance.start('A', env, log), Instance.start('B', env, log)]);
  try {
    await until(
      'both trusted',
      async () => (await a.state())?.trusted === true && (await b.state())?.trusted === true,
      30_000,
    );
    const times: number[] = [];
    for (let i = 0; i < trials; i++) {
      const s = await a.session(DID);
      if ((await b.me(s.token)) !== 200) throw new Error('B did not accept the fresh session');
      await sleep(Math.random() * 1000); // revocations at random points of the poll cycle
      const from = Date.now();
      await a.revoke(s.id);
      for (;;) {
        if ((await b.me(s.token)) === 401) break;
        if (Date.now() - from > 30_000) throw new Error('B still accepts after 30 s');
        await sleep(5);
      }
      times.push(Date.now() - from);
    }
    const sorted = [...times].sort((x, y) => x - y);
    return {
      path: label,
      trials,
      p50: percentile(sorted, 50),
      p95: percentile(sorted, 95),
      p99: percentile(sorted, 99),
      max: sorted[sorted.length - 1],
    };
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
}

it('revoke on A → 401 on B (ms)', async () => {
  const rows = [
    await measure('Redis channel', redis.url, TRIALS),
    await measure('database cursor only (no Redis)', undefined, CURSOR_TRIALS),
  ];
  console.table(rows);
});
