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
 *   npm run bench -- --memory           the cookie/PostgreSQL server's memory (RSS, heap used
 *                                       after a forced GC) once every seeded session has been
 *                                       requested once, by its own cookie, with the default
 *                                       `cacheMaxEntries` and with 10,000
 * Options: --rounds N (3), --duration S (10), --warmup S (3), --connections N (50),
 *          --sessions N (100000 seeded app sessions), --only id,id, --json FILE;
 *          with --memory: --rounds N (1), --bound N (10000), --connections N (16).
 * @internal
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
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
  type MemoryMessage,
  type ReadyMessage,
  type ServerConfig,
  type StatsMessage,
  VARIANTS,
  type VariantId,
  type VariantSpec,
} from './variants.js';
import { fmt, median, table } from '../support/report.js';
import {
  HOOKS,
  killChildren,
  PIN,
  ROOT,
  runLoadProcess,
  spawnNode,
  stopServer,
} from '../support/processes.js';
import { deleteRedisKeys } from '../support/redis-keys.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
/** A smoke run that takes longer than this has hung: it fails rather than blocking CI. */
const SMOKE_WATCHDOG_MS = 300_000;

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    micro: { type: 'boolean', default: false },
    memory: { type: 'boolean', default: false },
    bound: { type: 'string', default: '10000' },
    rounds: { type: 'string' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string' },
    sessions: { type: 'string', default: '100000' },
    only: { type: 'string' },
    json: { type: 'string' },
  },
});
const ROUNDS = Number(args.rounds ?? (args.memory ? 1 : 3));
const DURATION = Number(args.duration);
const WARMUP = Number(args.warmup);
const CONNECTIONS = Number(args.connections ?? (args.memory ? 16 : 50));
const SESSIONS = Number(args.sessions);

// --- processes ------------------------------------------------------------------------------

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
    exit: () => stopServer(child),
  };
}

async function runLoad(url: string, headers: Record<string, string>, duration: number) {
  const request: LoadRequest = { url, headers, connections: CONNECTIONS, duration };
  return runLoadProcess<LoadResult>('bench/http/load.ts', request);
}

// --- databases ------------------------------------------------------------------------------

interface Databases {
  postgres?: DataSourceOptions;
  sqlite?: DataSourceOptions;
  drop(): Promise<void>;
}

/**
 * The cookie token of seeded app session `n` (1-based) in PostgreSQL: base64url of the
 * SHA-256 of `bench-session-<n>`, 43 characters like a real token. The seed stores the
 * SHA-256 of that token as the session id, as `AppSessionService` does, so that the memory
 * run can sign in as every seeded session.
 */
function seededToken(n: number): string {
  return createHash('sha256').update(`bench-session-${n}`).digest('base64url');
}

/**
 * Fresh PostgreSQL and SQLite databases, migrated, each holding `SESSIONS` live app
 * sessions over `SESSIONS / 5` DIDs, inserted by SQL inside the database (as the cleanup
 * tests seed theirs), so that the guard reads from a table of realistic size. In
 * PostgreSQL their tokens are known ({@link seededToken}).
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
        // The token as seededToken() makes it (base64 with '-_' and no padding), then its
        // SHA-256 in hex as the id.
        await ds.query(
          `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent)
           SELECT encode(sha256(convert_to(rtrim(translate(encode(sha256(convert_to('bench-session-' || n::text, 'UTF8')), 'base64'), '+/', '-_'), '='), 'UTF8')), 'hex'),
                  'did:web:u' || (n % ${dids})::text || '.example',
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

// --- memory of the session cache -------------------------------------------------------

interface MemoryPoint {
  /** Distinct seeded sessions requested so far (one request each). */
  requested: number;
  memory: MemoryMessage;
}

interface MemoryRun {
  /** `appSession.cacheMaxEntries`, or undefined for the default. */
  maxEntries: number | undefined;
  round: number;
  points: MemoryPoint[];
  /** Seconds the requests took (all of them, settling included). */
  seconds: number;
  /** The cache check: sessions requested again, and how many of them the server read. */
  sampled: number;
  reads: number;
  /** How many of the sampled sessions the bound must have evicted. */
  expectedReads: number;
}

/** The default of `appSession.cacheMaxEntries` (lib/options/resolve-at-proto-options.ts). */
const DEFAULT_MAX_ENTRIES = 100_000;
/** The memory run keeps entries alive this long (`appSession.invalidatedCacheTtl`). */
const MEMORY_RUN_TTL_MS = 3_600_000;
/** And `appSession.cacheTtl`, at its maximum. */
const MEMORY_RUN_SHORT_TTL_MS = 60_000;
const MB = 1024 * 1024;

/**
 * One request per seeded session, `from` to `to` (1-based, inclusive), each with the
 * session's own cookie, `CONNECTIONS` at a time; every answer must be 200 with the
 * session's DID.
 */
async function requestSessions(
  pool: Pool,
  cookieName: string,
  from: number,
  to: number,
): Promise<void> {
  const dids = Math.max(1, Math.floor(SESSIONS / 5));
  let next = from;
  const worker = async () => {
    while (next <= to) {
      const n = next++;
      const res = await pool.request({
        path: '/me',
        method: 'GET',
        headers: { cookie: `${cookieName}=${seededToken(n)}` },
      });
      const body = await res.body.text();
      const did = res.statusCode === 200 ? (JSON.parse(body) as { did?: unknown }).did : undefined;
      if (did !== `did:web:u${n % dids}.example`) {
        throw new Error(`seeded session ${n}: got ${res.statusCode} ${body.slice(0, 200)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
}

/**
 * Waits until the server's writes have drained: the guard records activity without
 * awaiting it, so queued `lastSeenAt` updates (and their promises) would otherwise count
 * as memory of the cache. Quiet means at most the revocation cursor's polls.
 */
async function settle(server: RunningServer): Promise<void> {
  const deadline = Date.now() + 60_000;
  let before = await server.stats();
  for (;;) {
    await sleep(500);
    const after = await server.stats();
    if (after.queries - before.queries <= 2) return;
    if (Date.now() > deadline) throw new Error('the server kept writing for 60 s');
    before = after;
  }
}

async function memoryOnce(
  db: Databases,
  redisPrefix: string,
  maxEntries: number | undefined,
  round: number,
): Promise<MemoryRun> {
  const spec = VARIANTS.find((v) => v.id === 'cookie-hit-pg')!;
  // Every run starts from the seeded state: each first request records activity (one
  // write), as in the first run.
  const ds = new DataSource(db.postgres!);
  await ds.initialize();
  await ds.query('UPDATE atproto_app_session SET last_seen_at = $1', [Date.now() - 60_000]);
  await ds.query('VACUUM ANALYZE atproto_app_session');
  await ds.destroy();
  const server = await startServer(
    spec,
    {
      variant: spec.id,
      database: db.postgres,
      redisPrefix,
      appSession: {
        // The long lifetime needs the revocation cursor's proof at the moment of the read;
        // a read made while a poll was late gets `cacheTtl`, the longest allowed here.
        cacheTtl: MEMORY_RUN_SHORT_TTL_MS,
        invalidatedCacheTtl: MEMORY_RUN_TTL_MS,
        ...(maxEntries === undefined ? {} : { cacheMaxEntries: maxEntries }),
      },
    },
    ['--expose-gc'],
  );
  const pool = new Pool(`http://127.0.0.1:${server.ready.port}`, { connections: CONNECTIONS });
  try {
    // The booted app, before any request.
    await settle(server);
    const first = await server.call<MemoryMessage>({ type: 'memory' }, 'memory');
    if (!first.gcForced) throw new Error('the server has no gc(): it must run with --expose-gc');
    await checkAnswers(server);
    const cookieName = server.ready.valid.cookie!.split('=')[0]!;
    const points: MemoryPoint[] = [{ requested: 0, memory: first }];
    const bound = Number(args.bound);
    const marks = [
      ...new Set(
        [0.01, 0.1, 0.25, 0.5, 1]
          .map((f) => Math.round(f * SESSIONS))
          .concat(bound < SESSIONS ? [bound] : [])
          .filter((n) => n > 0),
      ),
    ].sort((a, b) => a - b);
    const started = Date.now();
    let done = 0;
    for (const mark of marks) {
      await requestSessions(pool, cookieName, done + 1, mark);
      done = mark;
      await settle(server);
      points.push({
        requested: done,
        memory: await server.call<MemoryMessage>({ type: 'memory' }, 'memory'),
      });
    }
    const seconds = (Date.now() - started) / 1000;
    // Were they all cached? 1,000 of them again, spread over the whole range: a hit reads
    // nothing; with the bound, all but the most recently used `maxEntries` were evicted.
    // Newest first, so that a miss re-cached here evicts none of the sample still to come.
    const sampled = Math.min(1000, SESSIONS);
    const sample = Array.from({ length: sampled }, (_, i) =>
      Math.min(SESSIONS, Math.floor(((i + 0.5) * SESSIONS) / sampled) + 1),
    ).reverse();
    const kept = maxEntries ?? DEFAULT_MAX_ENTRIES;
    const expectedReads = sample.filter((n) => n <= SESSIONS - kept).length;
    const s0 = await server.stats();
    for (const n of sample) await requestSessions(pool, cookieName, n, n);
    const s1 = await server.stats();
    return {
      maxEntries,
      round,
      points,
      seconds,
      sampled,
      reads: s1.sessionReads - s0.sessionReads,
      expectedReads,
    };
  } finally {
    await pool.close();
    await server.exit();
  }
}

async function memoryRun(db: Databases, redisPrefix: string): Promise<void> {
  const bound = Number(args.bound);
  const configs: Array<number | undefined> = [undefined, bound];
  const label = (m: number | undefined) =>
    m === undefined ? `${fmt(DEFAULT_MAX_ENTRIES)} (default)` : fmt(m);
  const runs: MemoryRun[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? configs : [...configs].reverse();
    for (const maxEntries of order) {
      const run = await memoryOnce(db, redisPrefix, maxEntries, r);
      runs.push(run);
      const last = run.points.at(-1)!.memory;
      console.log(
        `round ${r + 1}/${ROUNDS}, cacheMaxEntries ${label(maxEntries)}: ` +
          `${fmt(run.points.at(-1)!.requested)} sessions in ${fmt(run.seconds, 1)} s, ` +
          `RSS ${fmt(run.points[0]!.memory.rss / MB, 1)} → ${fmt(last.rss / MB, 1)} MB, ` +
          `heap used ${fmt(run.points[0]!.memory.heapUsed / MB, 1)} → ${fmt(last.heapUsed / MB, 1)} MB; ` +
          `cache check: ${run.reads} of ${run.sampled} read again (expected ${run.expectedReads})`,
      );
    }
  }
  console.log(
    `
npm run bench -- ${process.argv.slice(2).join(' ')}: the cookie/PostgreSQL server ` +
      `(${variantById('cookie-hit-pg').label}) with --expose-gc, appSession.invalidatedCacheTtl ` +
      `${MEMORY_RUN_TTL_MS / 60_000} min and cacheTtl ${MEMORY_RUN_SHORT_TTL_MS / 1000} s (the long one granted through the database revocation cursor, no ` +
      `Redis) so that no entry expires during the run; one GET /me per seeded session with its ` +
      `own cookie, ${CONNECTIONS} at a time, in order; memory after the writes settled and ` +
      `two forced full GCs (process.memoryUsage()); medians over ${ROUNDS} round(s). ` +
      `Δ: from the booted app (before any request) to that point; B/session: Δ heap used ` +
      `over the sessions requested.
`,
  );
  const rows: string[][] = [
    [
      'cacheMaxEntries',
      'sessions requested',
      'RSS MB',
      'Δ RSS MB',
      'heap used MB',
      'Δ heap MB',
      'heap total MB',
      'B/session (heap)',
      'external MB',
      'RSS: C heap / anon. / files MB',
    ],
  ];
  for (const maxEntries of configs) {
    const mine = runs.filter((x) => x.maxEntries === maxEntries);
    for (let i = 0; i < mine[0]!.points.length; i++) {
      const at = (f: (p: MemoryPoint, base: MemoryMessage) => number) =>
        median(mine.map((x) => f(x.points[i]!, x.points[0]!.memory)));
      const requested = mine[0]!.points[i]!.requested;
      rows.push([
        i === 0 ? label(maxEntries) : '',
        fmt(requested),
        fmt(at((p) => p.memory.rss) / MB, 1),
        i === 0 ? '' : fmt(at((p, b) => p.memory.rss - b.rss) / MB, 1),
        fmt(at((p) => p.memory.heapUsed) / MB, 1),
        i === 0 ? '' : fmt(at((p, b) => p.memory.heapUsed - b.heapUsed) / MB, 1),
        fmt(at((p) => p.memory.heapTotal) / MB, 1),
        i === 0 ? '' : fmt(at((p, b) => (p.memory.heapUsed - b.heapUsed) / p.requested)),
        fmt(at((p) => p.memory.external) / MB, 1),
        mine[0]!.points[i]!.memory.rssParts
          ? (['cHeap', 'anonymous', 'files'] as const)
              .map((k) => fmt(at((p) => p.memory.rssParts![k]) / MB, 1))
              .join(' / ')
          : '',
      ]);
    }
  }
  console.log(table(rows));
  // What the cache itself holds: both servers served the same requests, only the bound
  // differs, so the difference at the end is the entries beyond the bound.
  const end = (m: number | undefined, f: (x: MemoryMessage) => number) =>
    median(runs.filter((x) => x.maxEntries === m).map((x) => f(x.points.at(-1)!.memory)));
  const extra = SESSIONS - Math.min(bound, SESSIONS);
  const heapShare = end(undefined, (x) => x.heapUsed) - end(bound, (x) => x.heapUsed);
  console.log(
    `\nthe cache's share at ${fmt(SESSIONS)} sessions (default bound minus ${fmt(bound)}, ` +
      `${fmt(extra)} entries more): RSS ${fmt((end(undefined, (x) => x.rss) - end(bound, (x) => x.rss)) / MB, 1)} MB, ` +
      `heap used ${fmt(heapShare / MB, 1)} MB (${fmt(heapShare / Math.max(1, extra))} B/entry)`,
  );
  for (const maxEntries of configs) {
    const mine = runs.filter((x) => x.maxEntries === maxEntries);
    console.log(
      `cache check, cacheMaxEntries ${label(maxEntries)}: of ${mine[0]!.sampled} sessions ` +
        `spread over the ${fmt(SESSIONS)} requested again, ${mine.map((x) => x.reads).join(', ')} ` +
        `read from the database (expected ${mine[0]!.expectedReads}: those evicted by the bound)`,
    );
    if (mine.some((x) => x.reads > x.expectedReads)) {
      console.log(
        'warning: more reads than the bound explains: entries expired or were dropped during ' +
          'the run (a lapse of the revocation cursor drops every cache): the figures undercount',
      );
    }
  }
  if (args.json) writeFileSync(args.json, JSON.stringify(runs, null, 2));
}

const variantById = (id: VariantId) => VARIANTS.find((v) => v.id === id)!;

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
        killChildren();
        process.exit(1);
      }, SMOKE_WATCHDOG_MS)
    : undefined;
  console.log(environment());
  const redisPrefix = `bench-http-${randomBytes(4).toString('hex')}:`;
  const specs = args.memory
    ? [variantById('cookie-hit-pg')]
    : args.profile
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
    if (args.memory) {
      await memoryRun(db, redisPrefix);
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
    killChildren();
    await db.drop();
    if (specs.some((s) => s.redis))
      await deleteRedisKeys(redisPrefix, REDIS_URL).catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  async (error: unknown) => {
    console.error('bench failed:', error);
    killChildren();
    await sleep(100);
    process.exit(1);
  },
);
