/**
 * The cleanup benchmark (docs/benchmarks.md, "Cleanup at scale"): one cleanup run over a
 * backlog of ended app sessions on PostgreSQL, timed, while a separate Nest app process
 * serves guarded requests from the same database; the guard's p50/p99 with and without the
 * cleanup running, as a ratio.
 *
 *   node --import ./bench/support/swc-hooks.mjs bench/cleanup/main.ts            full run
 *   node --import ./bench/support/swc-hooks.mjs bench/cleanup/main.ts --quick    ~25 s:
 *        20,000 rows over 4,000 DIDs, 1 s slices of load; every result checked, no time judged
 *
 * What is seeded (a fresh database of its own, migrated, seeded by SQL inside PostgreSQL):
 * - `--rows` ended app sessions (a third each past their absolute expiry, idle for too long,
 *   revoked before the grace period) over `--dids` DIDs: every DID has one, the rest are
 *   spread with a skew (a few DIDs with many devices, most with one or two), in random
 *   physical order, as sessions written over time are;
 * - every 20th DID keeps an active app session (its OAuth session stays), every 100th (from
 *   the second) an active API key and no active app session (its OAuth session stays too);
 * - OAuth sessions (encrypted as the module writes them) for those DIDs and for
 *   `--oauth-percent` % of the others: those are revoked by the run. Their authorization
 *   server does not exist (`https://auth.pds.invalid`): each revocation fails at the network
 *   and the module deletes the session here anyway (see `AtProtoAuthService.revoke`).
 *
 * The guard's server is bench/http/server.ts (variant `--variant`, default `cookie-hit-pg`:
 * a cookie session, the default cache), pinned to core 1; the load generator (load.ts, a
 * fixed `--rate` of requests per second) to core 0; the cleanup runs in this process through
 * `AtProtoCleanupService.runOnce()`, unpinned, as PostgreSQL is. Before each cleanup,
 * `--idle-slices` slices of load without it; during it, slices back to back until it ends.
 *
 * Modes (`--modes`, alternating over `--rounds`, the order rotating each round):
 * - `module`: `AtProtoCleanupService.runOnce()` as the module runs it;
 * - `per-did`: the same runner on the same providers with the per-DID work of 0.1.0 (the
 *   OAuth session read for each DID of a batch, then its revocations one at a time, all
 *   ended before the next batch): the baseline of the ratio.
 *
 * Options: --rows N (1000000), --dids N (200000), --oauth-percent P (10), --rounds N (1),
 *          --modes a,b (module,per-did), --slice S (5), --idle-slices N (3), --rate R (400),
 *          --connections N (10), --variant id (cookie-hit-pg), --json FILE.
 * A run fails (exit code 1) when a cleanup leaves a row it should have deleted or deletes one
 * it should have kept, or when the guard answers anything but 200.
 * @internal
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, type DataSourceOptions } from 'typeorm';
import {
  AT_PROTO_OPTIONS,
  AtProtoCleanupService,
  AtProtoModule,
  atProtoEntities,
  atProtoMigrations,
  type CleanupResult,
  encryptedColumn,
} from 'nestjs-atproto-auth';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import { createTestDatabase } from '../../test/support/databases.js';
import type { ReadyMessage, ServerConfig, VariantId } from '../http/variants.js';
import { BENCH_DID } from '../http/variants.js';
import { perDidCleanup } from './per-did.js';
import type { RateLoadRequest, RateLoadResult } from './load.js';
import {
  HOOKS,
  killChildren,
  PIN,
  ROOT,
  runLoadProcess,
  spawnNode,
  stopServer,
} from '../support/processes.js';
import { median } from '../support/report.js';

/** A quick run that takes longer than this has hung: it fails rather than blocking CI. */
const QUICK_WATCHDOG_MS = 300_000;

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rows: { type: 'string' },
    dids: { type: 'string' },
    'oauth-percent': { type: 'string', default: '10' },
    rounds: { type: 'string', default: '1' },
    modes: { type: 'string', default: 'module,per-did' },
    slice: { type: 'string' },
    'idle-slices': { type: 'string' },
    rate: { type: 'string', default: '400' },
    connections: { type: 'string', default: '10' },
    variant: { type: 'string', default: 'cookie-hit-pg' },
    json: { type: 'string' },
  },
});
const QUICK = args.quick;
const ROWS = Number(args.rows ?? (QUICK ? 20_000 : 1_000_000));
const DIDS = Number(args.dids ?? (QUICK ? 4_000 : 200_000));
const OAUTH_PERCENT = Number(args['oauth-percent']);
const ROUNDS = Number(args.rounds);
const MODES = args.modes.split(',') as Mode[];
const SLICE = Number(args.slice ?? (QUICK ? 1 : 5));
const IDLE_SLICES = Number(args['idle-slices'] ?? (QUICK ? 1 : 3));
const RATE = Number(args.rate);
const CONNECTIONS = Number(args.connections);
const VARIANT = args.variant as VariantId;

type Mode = 'module' | 'per-did';
const KNOWN_MODES: readonly Mode[] = ['module', 'per-did'];

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** The issuer of every seeded OAuth session: a reserved name that never resolves. */
const MISSING_ISSUER = 'https://auth.pds.invalid';

// --- processes ------------------------------------------------------------------------------

interface GuardServer {
  url: string;
  ready: ReadyMessage;
  exit(): Promise<void>;
}

/** Starts bench/http/server.ts (unchanged) for `VARIANT` on the benchmark's database. */
async function startServer(database: DataSourceOptions): Promise<GuardServer> {
  const config: ServerConfig = { variant: VARIANT, database };
  const child = spawnNode(
    PIN.server,
    ['--import', HOOKS, join(ROOT, 'bench', 'http', 'server.ts')],
    { BENCH_SERVER: JSON.stringify(config), NODE_ENV: 'production' },
    true,
  );
  const ready = await new Promise<ReadyMessage>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the guard server did not start')), 120_000);
    child.once('exit', (code) => reject(new Error(`the guard server exited (${code})`)));
    child.on('message', (m: { type: string }) => {
      if (m.type !== 'ready') return;
      clearTimeout(timer);
      resolve(m as ReadyMessage);
    });
  });
  return {
    ready,
    url: `http://127.0.0.1:${ready.port}/me`,
    exit: () => stopServer(child),
  };
}

async function runLoad(server: GuardServer, duration: number): Promise<RateLoadResult> {
  const request: RateLoadRequest = {
    url: server.url,
    headers: server.ready.valid,
    connections: CONNECTIONS,
    rate: RATE,
    duration,
  };
  const result = await runLoadProcess<RateLoadResult>('bench/cleanup/load.ts', request);
  // The guard must answer every request of its own session: a latency over failures would
  // mean nothing. (Fewer answers than the rate asks for is a figure: the server fell behind.)
  if (result.failed > 0) throw new Error(`live traffic failed: ${JSON.stringify(result)}`);
  return result;
}

// --- the database ---------------------------------------------------------------------------

const didOf = (i: number) => `did:web:u${i}.example`;
const isActive = (i: number) => i % 20 === 0;
const hasKey = (i: number) => i % 100 === 1;
/** Ended DIDs with an OAuth session: a fixed pseudo-random `OAUTH_PERCENT` % of them. */
const hasOAuth = (i: number) => isActive(i) || hasKey(i) || (i * 7919) % 100 < OAUTH_PERCENT;

interface Seeded {
  /** Active app sessions seeded (they must all survive). */
  active: number;
  /** OAuth sessions that must survive (their DID is in use). */
  kept: number;
  /** OAuth sessions the run must revoke. */
  revocable: number;
}

/**
 * Replaces every row but the guard server's own app session by a fresh backlog (see the
 * file comment). The OAuth sessions are encrypted by the module's own column transformer
 * (its key ring is installed by the app context), then inserted by one statement.
 */
async function seed(ds: DataSource, options: ResolvedAtProtoOptions, now: number) {
  const idle = options.appSession.idleTtlMs;
  const grace = options.cleanup.revokedGraceMs;
  await ds.query(`DELETE FROM atproto_app_session WHERE did <> $1`, [BENCH_DID]);
  await ds.query(`DELETE FROM atproto_api_key`);
  await ds.query(`DELETE FROM atproto_oauth_session`);
  await ds.query(
    `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent)
     SELECT md5(n::text) || md5((n + 7)::text),
            'did:web:u' || (CASE WHEN n <= ${DIDS} THEN n - 1
                                 ELSE floor(${DIDS} * power(random(), 2))::int END)::text || '.example',
            ${now - 40 * DAY},
            CASE WHEN n % 3 = 0 THEN ${now - 1000} ELSE ${now + 20 * DAY} END,
            CASE WHEN n % 3 = 1 THEN ${now - idle - 1000} ELSE ${now - HOUR} END,
            CASE WHEN n % 3 = 2 THEN ${now - grace - 1000} ELSE NULL END,
            'Mozilla/5.0 (bench)'
     FROM generate_series(1, ${ROWS}) AS s(n) ORDER BY random()`,
  );
  const activeRows = (await ds.query(
    `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent)
     SELECT 'active-' || i, 'did:web:u' || i || '.example', ${now - DAY}, ${now + 20 * DAY},
            ${now - HOUR}, NULL, 'Mozilla/5.0 (bench)'
     FROM generate_series(0, ${DIDS - 1}, 20) AS s(i) RETURNING 1`,
  )) as unknown[];
  await ds.query(
    `INSERT INTO atproto_api_key (id, did, name, display_prefix, scopes, created_at, expires_at, revoked_at, last_used_at)
     SELECT 'key-' || i, 'did:web:u' || i || '.example', 'bot', 'atp_bench', NULL, ${now - DAY},
            NULL, NULL, NULL
     FROM generate_series(1, ${DIDS - 1}, 100) AS s(i)`,
  );
  const tokenSet = encryptedColumn('atproto_oauth_session', 'token_set');
  const dpopKey = encryptedColumn('atproto_oauth_session', 'dpop_key');
  // One DPoP key for all (its value plays no part: the revocation fails before any use).
  const dpop = JSON.stringify(dpopKey.to(JSON.stringify(jwk())));
  const dids: string[] = [];
  const tokens: string[] = [];
  let kept = 0;
  for (let i = 0; i < DIDS; i++) {
    if (!hasOAuth(i)) continue;
    if (isActive(i) || hasKey(i)) kept++;
    const did = didOf(i);
    dids.push(did);
    const value = JSON.stringify({
      iss: MISSING_ISSUER,
      sub: did,
      aud: 'https://pds.invalid',
      scope: 'atproto transition:generic',
      access_token: randomBytes(24).toString('base64url'),
      refresh_token: randomBytes(24).toString('base64url'),
      token_type: 'DPoP',
      expires_at: new Date(now + HOUR).toISOString(),
    });
    tokens.push(JSON.stringify(tokenSet.to(value)));
  }
  // Written a day before the run: the run's "written after it began" fence does not apply.
  await ds.query(
    `INSERT INTO atproto_oauth_session (did, token_set, dpop_key, auth_method, issuer, pds_url,
       access_expires_at, expires_at, created_at, updated_at, version)
     SELECT d, t::json, $3::json, '{"method":"none"}', '${MISSING_ISSUER}', 'https://pds.invalid',
            ${now + HOUR}, ${now + 60 * DAY}, ${now - DAY}, ${now - DAY}, 1
     FROM unnest($1::text[], $2::text[]) AS u(d, t)`,
    [dids, tokens, dpop],
  );
  // As autovacuum would have, long before a backlog this size builds up.
  await ds.query('VACUUM ANALYZE');
  return { active: activeRows.length, kept, revocable: dids.length - kept } satisfies Seeded;
}

function jwk(): object {
  // A fixed-shape P-256 private JWK; never used to sign in this benchmark.
  return {
    kty: 'EC',
    crv: 'P-256',
    x: randomBytes(32).toString('base64url'),
    y: randomBytes(32).toString('base64url'),
    d: randomBytes(32).toString('base64url'),
    kid: 'bench',
  };
}

async function count(ds: DataSource, sql: string): Promise<number> {
  const [row] = (await ds.query(sql)) as Array<{ n: unknown }>;
  return Number(row?.n);
}

/** What every run must leave: the live rows, and nothing else. */
async function check(ds: DataSource, seeded: Seeded, result: CleanupResult, mode: Mode) {
  const problems: string[] = [];
  const expect = (what: string, actual: number, expected: number) => {
    if (actual !== expected) problems.push(`${what}: ${actual}, expected ${expected}`);
  };
  expect('app sessions deleted', result.appSessions, ROWS);
  expect('OAuth sessions revoked', result.oauthSessionsRevoked, seeded.revocable);
  expect(
    'app sessions left',
    await count(ds, `SELECT COUNT(*) AS n FROM atproto_app_session WHERE did <> '${BENCH_DID}'`),
    seeded.active,
  );
  expect(
    'OAuth sessions left',
    await count(ds, 'SELECT COUNT(*) AS n FROM atproto_oauth_session'),
    seeded.kept,
  );
  expect(
    'OAuth sessions left without an active app session or key',
    await count(
      ds,
      `SELECT COUNT(*) AS n FROM atproto_oauth_session s WHERE NOT EXISTS
         (SELECT 1 FROM atproto_app_session a WHERE a.did = s.did)
       AND NOT EXISTS (SELECT 1 FROM atproto_api_key k WHERE k.did = s.did)`,
    ),
    0,
  );
  if (problems.length) throw new Error(`${mode}: ${problems.join('; ')}`);
}

// --- the cleanup side -------------------------------------------------------------------------

@Module({})
class CleanupBenchModule {}

async function cleanupApp(database: DataSourceOptions): Promise<INestApplicationContext> {
  return NestFactory.createApplicationContext(
    {
      module: CleanupBenchModule,
      imports: [
        TypeOrmModule.forRoot({
          ...database,
          entities: [...atProtoEntities],
          migrationsRun: false,
        } as never),
        AtProtoModule.forRoot({
          publicUrl: 'http://127.0.0.1:3999',
          encryption: { activeKeyId: 'k', keys: { k: randomBytes(32).toString('base64') } },
          // Run here by hand, not on a timer.
          cleanup: { enabled: false },
        }),
      ],
    },
    // The module warns once per revocation that fails at the (missing) server.
    { logger: ['error'] },
  );
}

// --- figures ------------------------------------------------------------------------------------

interface Sample {
  round: number;
  mode: Mode;
  seconds: number;
  result: CleanupResult;
  idle: RateLoadResult[];
  during: RateLoadResult[];
}

const ms = (us: number) => (us / 1000).toFixed(2);
/** 2xx answers per second over slices (below `--rate` when the server fell behind). */
const rps = (slices: RateLoadResult[]) =>
  Math.round(
    slices.reduce((n, l) => n + l.ok, 0) / slices.reduce((n, l) => n + l.seconds, 0),
  ).toString();

function report(samples: Sample[]): string {
  const rows = [
    [
      'round',
      'mode',
      'cleanup s',
      'rows/s',
      'revoked',
      'idle p50/p99 ms',
      'during p50/p99 ms',
      'p99 ratio (median slice)',
      'worst slice p99 ms',
      'req/s idle / during',
    ],
  ];
  for (const s of samples) {
    const idle99 = median(s.idle.map((l) => l.p99));
    const during99 = median(s.during.map((l) => l.p99));
    rows.push([
      String(s.round),
      s.mode,
      s.seconds.toFixed(1),
      Math.round(ROWS / s.seconds).toLocaleString('en'),
      String(s.result.oauthSessionsRevoked),
      `${ms(median(s.idle.map((l) => l.p50)))} / ${ms(idle99)}`,
      `${ms(median(s.during.map((l) => l.p50)))} / ${ms(during99)}`,
      (during99 / idle99).toFixed(2),
      ms(Math.max(...s.during.map((l) => l.p99))),
      `${rps(s.idle)} / ${rps(s.during)}`,
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => `| ${r.map((v, c) => v.padEnd(widths[c]!)).join(' | ')} |`;
  const out = [line(rows[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`];
  for (const r of rows.slice(1)) out.push(line(r));
  const byMode = new Map<Mode, number[]>();
  for (const s of samples) byMode.set(s.mode, [...(byMode.get(s.mode) ?? []), s.seconds]);
  const base = byMode.get('per-did');
  const mod = byMode.get('module');
  if (base && mod) {
    const ratios = mod.map((t, i) => (base[i] ?? base[0]!) / t);
    out.push(
      '',
      `per-did / module cleanup time: ${ratios.map((r) => r.toFixed(1)).join(', ')} ` +
        `(median ${median(ratios).toFixed(1)}×)`,
    );
  }
  return out.join('\n');
}

async function environment(ds: DataSource): Promise<string> {
  const [row] = (await ds.query('SHOW server_version')) as Array<{ server_version: string }>;
  return [
    `cpu: ${cpus()[0]?.model ?? '?'} × ${availableParallelism()}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
    `node ${process.versions.node}, PostgreSQL ${row?.server_version}`,
    `${PIN.note}; cleanup and PostgreSQL unpinned`,
    `${ROWS.toLocaleString('en')} ended app sessions over ${DIDS.toLocaleString('en')} DIDs; ` +
      `OAuth sessions for ${OAUTH_PERCENT} % of the ended DIDs (issuer unreachable); ` +
      `live traffic: ${VARIANT}, ${RATE} req/s over ${CONNECTIONS} connections, ${SLICE} s slices`,
  ].join('\n');
}

// --- the run ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  for (const m of MODES) {
    if (!KNOWN_MODES.includes(m)) throw new Error(`unknown mode ${m} (${KNOWN_MODES.join(', ')})`);
  }
  const db = await createTestDatabase('postgres', 'bench_cleanup');
  let app: INestApplicationContext | undefined;
  let server: GuardServer | undefined;
  const ds = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
    migrationsRun: true,
  });
  try {
    await ds.initialize();
    server = await startServer(db.options);
    app = await cleanupApp(db.options);
    const options = app.get<ResolvedAtProtoOptions>(AT_PROTO_OPTIONS);
    const runners: Record<Mode, (now: number) => Promise<CleanupResult>> = {
      module: (now) => app!.get(AtProtoCleanupService).runOnce(now),
      'per-did': perDidCleanup(app),
    };
    console.log(await environment(ds));
    const samples: Sample[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const order = MODES.map((_, i) => MODES[(i + round - 1) % MODES.length]!);
      for (const mode of order) {
        const now = Date.now();
        const t = performance.now();
        const seeded = await seed(ds, options, now);
        console.log(
          `round ${round}, ${mode}: seeded in ${((performance.now() - t) / 1000).toFixed(1)} s ` +
            `(${seeded.revocable} OAuth sessions to revoke, ${seeded.kept} to keep)`,
        );
        const idle: RateLoadResult[] = [];
        for (let i = 0; i < IDLE_SLICES; i++) idle.push(await runLoad(server, SLICE));
        let done = false;
        const started = performance.now();
        let endedAt = started;
        const cleanup = runners[mode](Date.now()).finally(() => {
          done = true;
          endedAt = performance.now();
        });
        const during: RateLoadResult[] = [];
        // At least one slice, then back to back until the run ends.
        do during.push(await runLoad(server, SLICE));
        while (!done);
        const result = await cleanup;
        const seconds = (endedAt - started) / 1000;
        const sample: Sample = { round, mode, seconds, result, idle, during };
        await check(ds, seeded, result, mode);
        samples.push(sample);
        console.log(`  ${mode}: ${sample.seconds.toFixed(1)} s, ${JSON.stringify(result)}`);
      }
    }
    console.log(`\n${report(samples)}`);
    if (args.json) writeFileSync(args.json, JSON.stringify(samples, null, 2));
  } finally {
    await app?.close();
    await server?.exit();
    if (ds.isInitialized) await ds.destroy();
    await db.drop();
  }
}

const watchdog = QUICK
  ? setTimeout(() => {
      console.error(`the quick run took longer than ${QUICK_WATCHDOG_MS / 1000} s`);
      killChildren();
      process.exit(1);
    }, QUICK_WATCHDOG_MS)
  : undefined;
watchdog?.unref();

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    killChildren();
    process.exit(1);
  },
);
