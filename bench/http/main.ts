/**
 * `npm run bench`: the HTTP benchmark of the guard (docs/benchmarks.md, "The guard over
 * HTTP, measured from outside").
 *
 * Every variant (variants.ts) is a NestJS app in a process of its own (server.ts), pinned to
 * core 1; the load generator (load.ts, autocannon) runs in another process pinned to core 0.
 * Variants alternate over the rounds (the order rotates each round); the table gives 2xx
 * responses per second, p50/p99 latency, the ratio to the unguarded route, the server's CPU
 * time per request (`process.cpuUsage()` delta over the requests it served, reported by the
 * server) and the spread across rounds.
 *
 *   npm run bench                       the full run (rounds × duration per variant)
 *   npm run bench -- --smoke            each variant answers 401 without a credential, 401
 *                                       with a forged one and 200 with its own, then ≤ 1 s of
 *                                       load with every answer a 2xx; no figure is judged
 *   npm run bench -- --profile          `--cpu-prof` of the cookie hit path and its
 *                                       baselines, with allocations and promises per request
 *   npm run bench -- --micro            the in-process micro-benchmarks (bench/*.bench.ts)
 * Options: --rounds N (3), --duration S (10), --warmup S (3), --connections N (50),
 *          --sessions N (100000 seeded app sessions), --only id,id, --json FILE.
 * @internal
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { createTestDatabase } from '../../test/support/databases.js';
import type { LoadRequest, LoadResult } from './load.js';
import {
  analyseCpuProfile,
  analyseHeapProfile,
  type CpuBreakdown,
  type CpuProfile,
} from './profile.js';
import {
  type ControlMessage,
  type HeapMessage,
  type ReadyMessage,
  type ServerConfig,
  type StatsMessage,
  VARIANTS,
  type VariantId,
  type VariantSpec,
} from './variants.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOOKS = join(ROOT, 'bench', 'support', 'swc-hooks.mjs');
const REDIS_URL = 'redis://127.0.0.1:6379';
/** A smoke run that takes longer than this has hung: it fails rather than blocking CI. */
const SMOKE_WATCHDOG_MS = 300_000;

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    micro: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '50' },
    sessions: { type: 'string', default: '100000' },
    only: { type: 'string' },
    json: { type: 'string' },
  },
});
const ROUNDS = Number(args.rounds);
const DURATION = Number(args.duration);
const WARMUP = Number(args.warmup);
const CONNECTIONS = Number(args.connections);
const SESSIONS = Number(args.sessions);

// --- processes ------------------------------------------------------------------------------

/**
 * Server and load generator on different cores, so that they do not compete for one. On a
 * machine with one core (or without `taskset`) nothing is pinned: both share what there is,
 * every variant pays the same load generator, and only the ratios of one run compare.
 */
function pinning(): { server: string[]; load: string[]; note: string } {
  let taskset = false;
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    taskset = true;
  } catch {
    // not installed
  }
  if (availableParallelism() >= 2 && taskset) {
    return {
      server: ['taskset', '-c', '1'],
      load: ['taskset', '-c', '0'],
      note: 'server pinned to core 1 (taskset -c 1), load generator to core 0 (taskset -c 0)',
    };
  }
  return {
    server: [],
    load: [],
    note:
      availableParallelism() < 2
        ? 'one core: server and load generator share it (not pinned); compare ratios only'
        : 'taskset not found: processes not pinned; compare ratios only',
  };
}

const PIN = pinning();
const children = new Set<ChildProcess>();

function spawnNode(
  pin: string[],
  nodeArgs: string[],
  env: Record<string, string>,
  ipc: boolean,
): ChildProcess {
  const command = [...pin, process.execPath, ...nodeArgs];
  const child = spawn(command[0]!, command.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ipc ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

interface RunningServer {
  spec: VariantSpec;
  child: ChildProcess;
  ready: ReadyMessage;
  url: string;
  stats(): Promise<StatsMessage>;
  call<T>(message: ControlMessage, reply: string): Promise<T>;
  exit(): Promise<void>;
}

async function startServer(
  spec: VariantSpec,
  config: ServerConfig,
  extraNodeArgs: string[] = [],
  env: Record<string, string> = {},
): Promise<RunningServer> {
  const child = spawnNode(
    PIN.server,
    [...extraNodeArgs, '--import', HOOKS, join(ROOT, 'bench', 'http', 'server.ts')],
    { BENCH_SERVER: JSON.stringify(config), NODE_ENV: 'production', ...env },
    true,
  );
  const waiters = new Map<string, Array<(m: unknown) => void>>();
  child.on('message', (m: { type: string }) => {
    const list = waiters.get(m.type);
    const next = list?.shift();
    next?.(m);
  });
  const waitFor = <T>(type: string, timeoutMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${spec.id}: no '${type}' from the server in ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onExit = (code: number | null) =>
        reject(new Error(`${spec.id}: the server exited (${code}) before '${type}'`));
      child.once('exit', onExit);
      const list = waiters.get(type) ?? [];
      list.push((m) => {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve(m as T);
      });
      waiters.set(type, list);
    });
  const ready = await waitFor<ReadyMessage>('ready', 120_000);
  const call = <T>(message: ControlMessage, reply: string): Promise<T> => {
    const answer = waitFor<T>(reply, 30_000);
    child.send(message);
    return answer;
  };
  return {
    spec,
    child,
    ready,
    url: `http://127.0.0.1:${ready.port}/me`,
    stats: () => call<StatsMessage>({ type: 'stats' }, 'stats'),
    call,
    exit: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.send({ type: 'exit' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function runLoad(url: string, headers: Record<string, string>, duration: number) {
  const request: LoadRequest = { url, headers, connections: CONNECTIONS, duration };
  const child = spawnNode(
    PIN.load,
    ['--import', HOOKS, join(ROOT, 'bench', 'http', 'load.ts'), JSON.stringify(request)],
    {},
    false,
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`the load generator exited with ${code}`);
  return JSON.parse(out) as LoadResult;
}

// --- databases ------------------------------------------------------------------------------

interface Databases {
  postgres?: DataSourceOptions;
  sqlite?: DataSourceOptions;
  drop(): Promise<void>;
}

/**
 * Fresh PostgreSQL and SQLite databases, migrated, each holding `SESSIONS` live app
 * sessions over `SESSIONS / 5` DIDs, inserted by SQL inside the database (as the cleanup
 * tests seed theirs), so that the guard reads from a table of realistic size.
 */
async function setUpDatabases(specs: readonly VariantSpec[]): Promise<Databases> {
  const drops: Array<() => Promise<void>> = [];
  const out: Databases = {
    drop: async () => {
      for (const d of drops) await d().catch(() => undefined);
    },
  };
  const now = Date.now();
  const DAY = 86_400_000;
  for (const dialect of ['postgres', 'sqlite'] as const) {
    if (!specs.some((s) => s.storage === dialect)) continue;
    const db = await createTestDatabase(dialect, 'bench_http');
    drops.push(db.drop);
    const ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
    });
    await ds.initialize();
    try {
      const dids = Math.max(1, Math.floor(SESSIONS / 5));
      if (dialect === 'postgres') {
        await ds.query(
          `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent)
           SELECT md5(n::text) || md5((n + 7)::text), 'did:web:u' || (n % ${dids})::text || '.example',
                  ${now - DAY}, ${now + 20 * DAY}, ${now - 60_000}, NULL, 'bench'
           FROM generate_series(1, ${SESSIONS}) AS s(n)`,
        );
        await ds.query('ANALYZE atproto_app_session');
      } else {
        await ds.query(
          `WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ${SESSIONS})
           INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent)
           SELECT lower(hex(randomblob(32))), 'did:web:u' || (n % ${dids}) || '.example',
                  ${now - DAY}, ${now + 20 * DAY}, ${now - 60_000}, NULL, 'bench' FROM s`,
        );
        await ds.query('ANALYZE');
      }
      const [row] = (await ds.query('SELECT COUNT(*) AS n FROM atproto_app_session')) as Array<{
        n: unknown;
      }>;
      if (Number(row?.n) !== SESSIONS) throw new Error(`seeded ${String(row?.n)} app sessions`);
    } finally {
      await ds.destroy();
    }
    out[dialect] = db.options;
  }
  return out;
}

async function deleteRedisKeys(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  await redis.connect();
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

// --- checks ---------------------------------------------------------------------------------

/**
 * What makes a figure mean something: a guarded variant refuses a request without a
 * credential and one with a forged credential (401), and answers its own credential with
 * its DID (200). An open route answers 200.
 */
async function checkAnswers(server: RunningServer): Promise<void> {
  const get = async (headers: Record<string, string>) => {
    const res = await fetch(server.url, { headers });
    return { status: res.status, body: await res.text() };
  };
  const fail = (what: string, got: { status: number; body: string }) => {
    throw new Error(`${server.spec.id}: ${what}, got ${got.status} ${got.body.slice(0, 200)}`);
  };
  if (server.spec.guarded) {
    const none = await get({});
    if (none.status !== 401) fail('expected 401 without a credential', none);
    if (server.ready.forged) {
      const forged = await get(server.ready.forged);
      if (forged.status !== 401) fail('expected 401 with a forged credential', forged);
    }
  }
  const ok = await get(server.ready.valid);
  if (ok.status !== 200) fail('expected 200 with its credential', ok);
  const did = (JSON.parse(ok.body) as { did?: unknown }).did;
  if (did !== server.ready.did) fail(`expected the DID ${server.ready.did}`, ok);
}

function checkLoad(spec: VariantSpec, load: LoadResult): void {
  if (load.ok === 0 || load.non2xx > 0 || load.errors > 0 || load.timeouts > 0) {
    throw new Error(
      `${spec.id}: under load ${load.ok} answers were 2xx, ${load.non2xx} not, ` +
        `${load.errors} errors, ${load.timeouts} timeouts: the figures would not measure the guard`,
    );
  }
}

// --- measuring ------------------------------------------------------------------------------

interface Sample {
  load: LoadResult;
  /** Server CPU time per request served, µs. */
  cpuUs: number;
  /** Share of the window the server's event loop was busy. */
  busy: number;
  /** Garbage-collection time per request, µs. */
  gcUs: number;
  /** SQL statements per 1,000 requests. */
  queriesPerK: number;
  /** Share of the machine's CPU time the hypervisor took during the window, if known. */
  steal?: number;
}

async function measure(server: RunningServer, duration: number): Promise<Sample> {
  const before = await server.stats();
  const steal0 = stolen();
  const load = await runLoad(server.url, server.ready.valid, duration);
  const steal1 = stolen();
  const after = await server.stats();
  checkLoad(server.spec, load);
  const requests = after.requests - before.requests - 1; // the `stats` call is not one
  const cpu = after.cpu.user + after.cpu.system - before.cpu.user - before.cpu.system;
  const active = after.elu.active - before.elu.active;
  const idle = after.elu.idle - before.elu.idle;
  return {
    load,
    cpuUs: cpu / Math.max(1, requests),
    busy: active / Math.max(1e-9, active + idle),
    gcUs: ((after.gc.ms - before.gc.ms) * 1000) / Math.max(1, requests),
    queriesPerK: ((after.queries - before.queries) * 1000) / Math.max(1, requests),
    steal: stealShare(steal0, steal1),
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const sep = `| ${widths.map((w, i) => (i === 0 ? '-'.repeat(w) : `${'-'.repeat(w - 1)}:`)).join(' | ')} |`;
  return [line(rows[0]!), sep, ...rows.slice(1).map(line)].join('\n');
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function report(results: Map<VariantId, Sample[]>, baseline: VariantId): string {
  const base = results.get(baseline);
  const rows: string[][] = [
    [
      'variant',
      'req/s',
      'spread',
      'vs unguarded',
      'p50 ms',
      'p99 ms',
      'CPU µs/req',
      'vs unguarded by CPU',
      'µs vs unguarded',
      'GC µs/req',
      'SQL /1k req',
      'busy',
    ],
  ];
  const cpuOf = (samples: Sample[]) => {
    const cpu = samples.map((s) => s.cpuUs);
    return { median: median(cpu), min: Math.min(...cpu) };
  };
  const b = base ? cpuOf(base) : undefined;
  const signed = (n: number) => `${n >= 0 ? '+' : ''}${fmt(n, 1)}`;
  for (const [id, samples] of results) {
    const rps = samples.map((s) => s.load.rps);
    const mid = median(rps);
    const ratios = base ? samples.map((s, i) => s.load.rps / base[i]!.load.rps) : [];
    const cpu = cpuOf(samples);
    rows.push([
      VARIANTS.find((v) => v.id === id)!.label,
      fmt(mid),
      `±${fmt(((Math.max(...rps) - Math.min(...rps)) / 2 / mid) * 100)} %`,
      base
        ? `${fmt(median(ratios), 2)}× (${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)})`
        : '',
      fmt(median(samples.map((s) => s.load.p50)) / 1000, 2),
      fmt(median(samples.map((s) => s.load.p99)) / 1000, 2),
      `${fmt(cpu.median, 1)} / ${fmt(cpu.min, 1)}`,
      b ? `${fmt(b.median / cpu.median, 2)}× / ${fmt(b.min / cpu.min, 2)}×` : '',
      id === baseline || !b ? '' : `${signed(cpu.median - b.median)} / ${signed(cpu.min - b.min)}`,
      fmt(median(samples.map((s) => s.gcUs)), 1),
      VARIANTS.find((v) => v.id === id)!.storage
        ? fmt(median(samples.map((s) => s.queriesPerK)), 1)
        : '',
      `${fmt(median(samples.map((s) => s.busy)) * 100)} %`,
    ]);
  }
  return table(rows);
}

/** Time the hypervisor took from this machine's CPUs (Linux `/proc/stat`), as a share. */
function stolen(): { steal: number; total: number } | undefined {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1);
    const n = cpu.map(Number);
    return { steal: n[7] ?? 0, total: n.reduce((a, b) => a + b, 0) };
  } catch {
    return undefined;
  }
}

const stealShare = (
  a: ReturnType<typeof stolen>,
  b: ReturnType<typeof stolen>,
): number | undefined =>
  a && b && b.total > a.total ? (b.steal - a.steal) / (b.total - a.total) : undefined;

function environment(): string {
  const version = (pkg: string) =>
    (
      JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as {
        version: string;
      }
    ).version;
  return [
    `cpu: ${cpus()[0]?.model ?? '?'} × ${availableParallelism()}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
    `node ${process.versions.node}, @nestjs/core ${version('@nestjs/core')}, express ${version(
      'express',
    )}, typeorm ${version('typeorm')}, autocannon ${version('autocannon')}`,
    PIN.note,
  ].join('\n');
}

async function serviceVersions(db: Databases): Promise<string> {
  const parts: string[] = [];
  if (db.postgres) {
    const ds = new DataSource(db.postgres);
    await ds.initialize();
    const [row] = (await ds.query('SHOW server_version')) as Array<{ server_version: string }>;
    parts.push(`PostgreSQL ${row?.server_version}`);
    await ds.destroy();
  }
  if (db.sqlite) parts.push(`better-sqlite3 ${readVersion('better-sqlite3')}`);
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  await redis.connect();
  const info = await redis.info('server');
  redis.disconnect();
  parts.push(`Redis ${/redis_version:(\S+)/.exec(info)?.[1]}`);
  return parts.join(', ');
}

function readVersion(pkg: string): string {
  return (
    JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
}

// --- the runs -------------------------------------------------------------------------------

function selected(defaults: readonly VariantId[]): VariantSpec[] {
  const ids = args.only ? (args.only.split(',') as VariantId[]) : defaults;
  for (const id of ids) {
    if (!VARIANTS.some((v) => v.id === id)) throw new Error(`unknown variant ${id}`);
  }
  return VARIANTS.filter((v) => ids.includes(v.id));
}

async function startAll(
  specs: readonly VariantSpec[],
  db: Databases,
  redisPrefix: string,
  extra: (spec: VariantSpec) => { nodeArgs?: string[]; env?: Record<string, string> } = () => ({}),
): Promise<RunningServer[]> {
  return Promise.all(
    specs.map((spec) => {
      const { nodeArgs, env } = extra(spec);
      return startServer(
        spec,
        {
          variant: spec.id,
          ...(spec.storage ? { database: db[spec.storage] } : {}),
          ...(spec.redis ? { redisUrl: REDIS_URL, redisPrefix } : {}),
        },
        nodeArgs,
        env,
      );
    }),
  );
}

async function benchmark(servers: RunningServer[]): Promise<Map<VariantId, Sample[]>> {
  const results = new Map<VariantId, Sample[]>(servers.map((s) => [s.spec.id, []]));
  if (!args.smoke) {
    for (const server of servers) {
      console.log(`warm-up: ${server.spec.id} (${WARMUP} s)`);
      checkLoad(server.spec, await runLoad(server.url, server.ready.valid, WARMUP));
    }
  }
  const rounds = args.smoke ? 1 : ROUNDS;
  for (let r = 0; r < rounds; r++) {
    // Rotate the order: no variant always follows the same one.
    const order = servers.map((_, i) => servers[(i + r) % servers.length]!);
    for (const server of order) {
      const sample = await measure(server, args.smoke ? 1 : DURATION);
      results.get(server.spec.id)!.push(sample);
      console.log(
        `round ${r + 1}/${rounds} ${server.spec.id}: ${fmt(sample.load.rps)} req/s, ` +
          `p50 ${fmt(sample.load.p50 / 1000, 2)} ms, p99 ${fmt(sample.load.p99 / 1000, 2)} ms, ` +
          `${fmt(sample.cpuUs, 1)} µs CPU/req` +
          (sample.steal === undefined ? '' : `, ${fmt(sample.steal * 100, 1)} % stolen`),
      );
    }
  }
  // The table is in the variants' order, not the last round's.
  return new Map(VARIANTS.filter((v) => results.has(v.id)).map((v) => [v.id, results.get(v.id)!]));
}

async function profileRun(db: Databases, redisPrefix: string): Promise<void> {
  const specs = selected(['unguarded', 'atproto-public', 'cookie-hit-pg']);
  const dir = mkdtempSync(join(tmpdir(), 'atp-bench-prof-'));
  console.log(`profiles in ${dir} (outside the repository)`);
  const breakdowns = new Map<VariantId, CpuBreakdown>();
  const heaps = new Map<VariantId, ReturnType<typeof analyseHeapProfile>>();
  const promises = new Map<VariantId, number>();
  for (const spec of specs) {
    // One variant at a time: the profiled process has the core to itself.
    const [server] = await startAll([spec], db, redisPrefix, () => ({
      nodeArgs: [
        '--cpu-prof',
        `--cpu-prof-dir=${dir}`,
        `--cpu-prof-name=${spec.id}.cpuprofile`,
        '--cpu-prof-interval=100',
      ],
    }));
    await checkAnswers(server!);
    checkLoad(spec, await runLoad(server!.url, server!.ready.valid, WARMUP));
    const before = await server!.stats();
    const load = await runLoad(server!.url, server!.ready.valid, DURATION);
    const after = await server!.stats();
    checkLoad(spec, load);
    // Allocations, after the CPU window (the heap sampler has a cost of its own).
    await server!.call({ type: 'heap-start' }, 'heap-started');
    const h0 = await server!.stats();
    await runLoad(server!.url, server!.ready.valid, 3);
    const h1 = await server!.stats();
    const heap = await server!.call<HeapMessage>({ type: 'heap-stop' }, 'heap');
    heaps.set(spec.id, analyseHeapProfile(heap.profile, h1.requests - h0.requests));
    await server!.exit();
    const profile = JSON.parse(
      readFileSync(join(dir, `${spec.id}.cpuprofile`), 'utf8'),
    ) as CpuProfile;
    breakdowns.set(
      spec.id,
      analyseCpuProfile(
        profile,
        before.hrtimeUs,
        after.hrtimeUs,
        after.requests - before.requests - 1,
      ),
    );
    // Promises per request, in a process of its own (the counting hook slows every promise).
    const [counted] = await startAll([spec], db, redisPrefix, () => ({
      env: { BENCH_COUNT_PROMISES: '1' },
    }));
    checkLoad(spec, await runLoad(counted!.url, counted!.ready.valid, 1));
    const p0 = await counted!.stats();
    await runLoad(counted!.url, counted!.ready.valid, 2);
    const p1 = await counted!.stats();
    promises.set(spec.id, (p1.promises! - p0.promises!) / (p1.requests - p0.requests - 1));
    await counted!.exit();
  }

  const ids = [...breakdowns.keys()];
  const header = ['µs per request (under the profiler)', ...ids];
  const rows: string[][] = [header];
  rows.push(['non-idle CPU', ...ids.map((id) => fmt(breakdowns.get(id)!.busyUs, 1))]);
  for (let i = 0; i < breakdowns.get(ids[0]!)!.categories.length; i++) {
    const label = breakdowns.get(ids[0]!)!.categories[i]![0];
    rows.push([label, ...ids.map((id) => fmt(breakdowns.get(id)!.categories[i]![1], 2))]);
  }
  rows.push(['bytes allocated per request', ...ids.map((id) => fmt(heaps.get(id)!.total))]);
  rows.push(['promises created per request', ...ids.map((id) => fmt(promises.get(id)!, 1))]);
  console.log(`\n${table(rows)}\n`);
  for (const id of ids) {
    const b = breakdowns.get(id)!;
    console.log(`\n${id}: self time by file (µs/request, ${fmt(b.requests)} requests)`);
    console.log(table([['file', 'µs'], ...b.groups.slice(0, 25).map(([k, v]) => [k, fmt(v, 2)])]));
    console.log(`\n${id}: self time by function (µs/request)`);
    console.log(table([['function', 'µs'], ...b.functions.map(([k, v]) => [k, fmt(v, 2)])]));
    console.log(`\n${id}: allocations by function (bytes/request)`);
    console.log(
      table([['function', 'bytes'], ...heaps.get(id)!.functions.map(([k, v]) => [k, fmt(v)])]),
    );
  }
  if (args.json) {
    writeFileSync(
      args.json,
      JSON.stringify(
        { breakdowns: [...breakdowns], heaps: [...heaps], promises: [...promises] },
        null,
        2,
      ),
    );
  }
  // The profiles stay for a closer look (e.g. in Chrome DevTools); they are not needed here.
  console.log(`profiles: ${readdirSync(dir).join(', ')}`);
}

async function micro(): Promise<number> {
  const jest = join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js');
  const child = spawn(
    process.execPath,
    [
      '--experimental-vm-modules',
      jest,
      '--runInBand',
      '--roots',
      '<rootDir>/bench',
      '--testMatch',
      '**/*.bench.ts',
      '--testTimeout',
      '600000',
    ],
    { cwd: ROOT, stdio: 'inherit' },
  );
  return new Promise((r) => child.once('exit', (code) => r(code ?? 1)));
}

async function main(): Promise<void> {
  if (args.micro) process.exit(await micro());
  const started = Date.now();
  const watchdog = args.smoke
    ? setTimeout(() => {
        console.error(
          `bench --smoke: still running after ${SMOKE_WATCHDOG_MS / 1000} s, giving up`,
        );
        for (const c of children) c.kill('SIGKILL');
        process.exit(1);
      }, SMOKE_WATCHDOG_MS)
    : undefined;
  console.log(environment());
  const redisPrefix = `bench-http-${randomBytes(4).toString('hex')}:`;
  const specs = args.profile
    ? selected(['unguarded', 'atproto-public', 'cookie-hit-pg'])
    : selected(VARIANTS.map((v) => v.id));
  const db = await setUpDatabases(specs);
  let servers: RunningServer[] = [];
  try {
    console.log(`${await serviceVersions(db)}; ${fmt(SESSIONS)} app sessions seeded`);
    if (args.profile) {
      await profileRun(db, redisPrefix);
      return;
    }
    servers = await startAll(specs, db, redisPrefix);
    console.log(`${servers.length} servers up (t+${((Date.now() - started) / 1000).toFixed(1)} s)`);
    for (const server of servers) await checkAnswers(server);
    console.log(
      'every variant answers 401 without (or with a forged) credential, 200 with its own',
    );
    const results = await benchmark(servers);
    const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
    console.log(
      `\n${command}: ${args.smoke ? 'smoke, 1 round of 1 s' : `${ROUNDS} rounds of ${DURATION} s`}, ` +
        `${CONNECTIONS} connections. req/s: median over rounds; spread: half their range ` +
        'over the median; vs unguarded: ratio of req/s to the unguarded route in the same ' +
        'round (median, range); CPU µs/req: server CPU time per request (median / least over ' +
        "the rounds); vs unguarded by CPU: the unguarded route's CPU µs/req over this " +
        "variant's (the ratio of req/s of two saturated servers), from the medians / from the " +
        'least; µs vs unguarded: the difference, likewise; busy: share of the time the ' +
        'server was busy.\n',
    );
    const all = [...results.values()]
      .flat()
      .flatMap((x) => (x.steal === undefined ? [] : [x.steal]));
    if (all.length) {
      console.log(
        `CPU time taken by the hypervisor during the rounds: median ${fmt(median(all) * 100, 1)} %, ` +
          `max ${fmt(Math.max(...all) * 100, 1)} %\n`,
      );
    }
    if (args.smoke) console.log('(one cold second per variant: these figures mean nothing)\n');
    console.log(report(results, 'unguarded'));
    // req/s measure the server only while it is saturated; CPU µs per request hold either way.
    for (const [id, samples] of results) {
      const busy = median(samples.map((x) => x.busy));
      if (!args.smoke && busy < 0.9) {
        console.log(
          `note: ${id} kept its server busy ${fmt(busy * 100)} % of the time: the load ` +
            'generator (or another process on its core) limited its req/s; compare CPU µs/req',
        );
      }
    }
    if (args.json) writeFileSync(args.json, JSON.stringify([...results], null, 2));
    if (args.smoke) {
      console.log(
        `\nbench --smoke: ${servers.length} variants checked in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      );
    }
  } finally {
    clearTimeout(watchdog);
    await Promise.all(servers.map((s) => s.exit().catch(() => undefined)));
    for (const c of children) c.kill('SIGKILL');
    await db.drop();
    if (specs.some((s) => s.redis)) await deleteRedisKeys(redisPrefix).catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  async (error: unknown) => {
    console.error('bench failed:', error);
    for (const c of children) c.kill('SIGKILL');
    await sleep(100);
    process.exit(1);
  },
);
