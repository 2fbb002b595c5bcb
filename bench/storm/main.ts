/**
 * The refresh storm's added latency (docs/benchmarks.md): what the requests of a burst pay
 * when the session's access token has just expired, against the same burst on a fresh one.
 *
 * The setup of test/multi-instance/refresh-once.e2e-spec.ts, through its support code: the
 * real local PDS in a process of its own, 4 instances of the sample app (separate OS
 * processes, https, one PostgreSQL database) sharing a redis-server of the run's own (the
 * distributed session lock), one signed-in user. Each measured burst is `--burst` (250)
 * concurrent `GET /api/session` spread round-robin over the instances (restore the OAuth
 * session, then call the PDS as the user), each request timed from its start to the end
 * of its body, in this process:
 *
 * - **fresh**: the stored access token is valid; no request refreshes;
 * - **storm**: the stored access token expired a second ago; one request refreshes it
 *   under the distributed lock (one token request reaches the PDS), the others wait for the
 *   lock and then find the new token.
 *
 * The two alternate over the rounds (the order flips each round), after an unmeasured
 * burst of each; the added latency is the storm's p50/p99 minus (and over) the fresh
 * burst's of the same round. The PDS answers token requests as fast as it can (no delay
 * unless `--token-delay`).
 *
 *   node --import ./bench/support/swc-hooks.mjs bench/storm/main.ts
 *   ... --smoke     one round; asserts only that every answer is a 2xx and that exactly one
 *                   refresh reached the PDS in the storm (and none in the fresh burst)
 * Options: --rounds N (5), --burst N (250), --token-delay MS (0), --json FILE.
 * @internal
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { OwnRedis } from '../../test/support/redis-server.js';
import {
  type ApiResult,
  Cluster,
  describeRequests,
  refreshAttempts,
  ROOT,
  statusCounts,
} from '../../test/multi-instance/support/cluster.js';
import { fmt, median, table } from '../support/report.js';

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '5' },
    burst: { type: 'string', default: '250' },
    'token-delay': { type: 'string', default: '0' },
    json: { type: 'string' },
  },
});
const ROUNDS = args.smoke ? 1 : Number(args.rounds);
const BURST = Number(args.burst);
const TOKEN_DELAY_MS = Number(args['token-delay']);
/** A run that takes longer than this has hung: it fails rather than blocking CI. */
const WATCHDOG_MS = 600_000;

type Kind = 'fresh' | 'storm';

interface Burst {
  kind: Kind;
  round: number;
  /** ms, each request from its start to the end of its body, sorted. */
  latencies: number[];
  /** ms from the first request's start to the last one's end. */
  wallMs: number;
  statuses: Record<number, number>;
  /** Refresh requests that reached the PDS. */
  refreshes: number;
  /** ms from the burst's start to the refresh reaching the PDS, if one did. */
  refreshAtMs?: number;
  /** CPU time the 4 app instances spent during the burst (user + system), ms. */
  instancesCpuMs: number;
  /** Share of the machine's CPU time the hypervisor took during the burst, if known. */
  steal?: number;
  pdsLog: string;
}

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;

function version(pkg: string): string {
  return (
    JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
}

/** Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux). */
const CLOCK_TICKS = 100;

/**
 * CPU time (user + system, ms) of the app instances so far, from `/proc/<pid>/stat`:
 * the work a burst costs, which the machine's other load does not change the way it
 * changes latencies. Undefined where there is no `/proc`.
 */
function instancesCpuMs(cluster: Cluster): number | undefined {
  try {
    let ticks = 0;
    for (const instance of cluster.instances) {
      const stat = readFileSync(`/proc/${instance.child!.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    }
    return (ticks * 1000) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** Time the hypervisor took from this machine's CPUs (Linux `/proc/stat`). */
function stolen(): { steal: number; total: number } | undefined {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1);
    const n = cpu.map(Number);
    return { steal: n[7] ?? 0, total: n.reduce((a, b) => a + b, 0) };
  } catch {
    return undefined;
  }
}

/** `BURST` concurrent `GET /api/session`, round-robin over the instances, each timed. */
async function timedBurst(
  cluster: Cluster,
  cookie: string,
): Promise<{ results: ApiResult[]; latencies: number[]; wallMs: number; startedAt: number }> {
  const startedAt = Date.now();
  const t0 = performance.now();
  const latencies: number[] = [];
  const results = await Promise.all(
    Array.from({ length: BURST }, async (_, i) => {
      const start = performance.now();
      const result = await cluster.session(
        cluster.instances[i % cluster.instances.length]!,
        cookie,
      );
      latencies.push(performance.now() - start);
      return result;
    }),
  );
  const wallMs = performance.now() - t0;
  return { results, latencies: latencies.sort((a, b) => a - b), wallMs, startedAt };
}

async function burst(cluster: Cluster, cookie: string, kind: Kind, round: number): Promise<Burst> {
  await cluster.pds.reset();
  if (kind === 'storm') await cluster.expireAccessToken(cluster.account.did);
  const cpu0 = instancesCpuMs(cluster);
  const steal0 = stolen();
  const { results, latencies, wallMs, startedAt } = await timedBurst(cluster, cookie);
  const cpu1 = instancesCpuMs(cluster);
  const steal1 = stolen();
  const requests = await cluster.pds.tokenRequests();
  const attempts = refreshAttempts(requests);
  return {
    kind,
    round,
    latencies,
    wallMs,
    statuses: statusCounts(results),
    refreshes: attempts.length,
    ...(attempts[0] ? { refreshAtMs: attempts[0].at - startedAt } : {}),
    instancesCpuMs: cpu0 === undefined || cpu1 === undefined ? Number.NaN : cpu1 - cpu0,
    ...(steal0 && steal1 && steal1.total > steal0.total
      ? { steal: (steal1.steal - steal0.steal) / (steal1.total - steal0.total) }
      : {}),
    pdsLog: describeRequests(requests),
  };
}

/** What makes a burst's figures mean something: every answer a 2xx, the refreshes expected. */
function problems(b: Burst): string[] {
  const out: string[] = [];
  const bad = Object.entries(b.statuses).filter(([status]) => !/^2\d\d$/.test(status));
  if (bad.length) out.push(`answers ${JSON.stringify(b.statuses)}`);
  const expected = b.kind === 'storm' ? 1 : 0;
  if (b.refreshes !== expected) {
    out.push(`${b.refreshes} refreshes reached the PDS (expected ${expected}): ${b.pdsLog}`);
  }
  return out;
}

function describe(b: Burst): string {
  const l = b.latencies;
  return (
    `${b.kind}: p50 ${fmt(quantile(l, 0.5), 1)} ms, p99 ${fmt(quantile(l, 0.99), 1)} ms, ` +
    `max ${fmt(l.at(-1)!, 1)} ms, burst ${fmt(b.wallMs)} ms, ` +
    `instances' CPU ${fmt(b.instancesCpuMs)} ms, ${JSON.stringify(b.statuses)}, ` +
    `${b.refreshes} refresh(es)` +
    (b.refreshAtMs === undefined ? '' : ` reaching the PDS at +${fmt(b.refreshAtMs)} ms`) +
    (b.steal === undefined ? '' : `, ${fmt(b.steal * 100, 1)} % stolen`)
  );
}

function report(bursts: Burst[]): string {
  const of = (kind: Kind) => bursts.filter((b) => b.kind === kind);
  const stat = (b: Burst, what: 'p50' | 'p99' | 'max') =>
    what === 'max' ? b.latencies.at(-1)! : quantile(b.latencies, what === 'p50' ? 0.5 : 0.99);
  const range = (xs: number[], digits: number, unit = '') =>
    `${fmt(median(xs), digits)}${unit} (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`;
  const rows: string[][] = [
    ['', 'p50 ms', 'p99 ms', 'max ms', 'whole burst ms', "instances' CPU ms"],
  ];
  for (const kind of ['fresh', 'storm'] as const) {
    const mine = of(kind);
    rows.push([
      kind === 'fresh'
        ? 'fresh session (no refresh)'
        : 'just-expired access token (1 refresh, the rest wait)',
      range(
        mine.map((b) => stat(b, 'p50')),
        1,
      ),
      range(
        mine.map((b) => stat(b, 'p99')),
        1,
      ),
      range(
        mine.map((b) => stat(b, 'max')),
        1,
      ),
      range(
        mine.map((b) => b.wallMs),
        0,
      ),
      range(
        mine.map((b) => b.instancesCpuMs),
        0,
      ),
    ]);
  }
  // Paired within each round: the storm against the fresh burst next to it.
  const pairs = of('storm').map((s) => [of('fresh').find((f) => f.round === s.round)!, s] as const);
  const added: string[][] = [['added by the storm', 'storm − fresh, ms', 'storm ÷ fresh']];
  const cpu = pairs.map(([f, s]) => s.instancesCpuMs - f.instancesCpuMs);
  for (const what of ['p50', 'p99', 'max'] as const) {
    added.push([
      what,
      range(
        pairs.map(([f, s]) => stat(s, what) - stat(f, what)),
        1,
      ),
      range(
        pairs.map(([f, s]) => stat(s, what) / stat(f, what)),
        2,
        '×',
      ),
    ]);
  }
  added.push([
    "instances' CPU",
    range(cpu, 0),
    range(
      pairs.map(([f, s]) => s.instancesCpuMs / f.instancesCpuMs),
      2,
      '×',
    ),
  ]);
  return (
    `${table(rows)}\n\n${table(added)}\n\ninstances' CPU added per waiting request: ` +
    `${fmt(median(cpu) / (BURST - 1), 2)} ms (median over the rounds, over ${BURST - 1} requests)`
  );
}

async function main(): Promise<void> {
  const started = Date.now();
  const watchdog = setTimeout(() => {
    console.error(`bench/storm: still running after ${WATCHDOG_MS / 1000} s, giving up`);
    process.exit(1);
  }, WATCHDOG_MS);
  watchdog.unref();
  console.log(
    `cpu: ${cpus()[0]?.model ?? '?'} × ${availableParallelism()}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}\n` +
      `node ${process.versions.node}, @atproto/pds ${version('@atproto/pds')}, ` +
      `@atproto/oauth-client-node ${version('@atproto/oauth-client-node')}, ` +
      `redlock ${version('redlock')}, @nestjs/core ${version('@nestjs/core')}`,
  );
  const [redis, cluster] = await Promise.all([
    OwnRedis.start(),
    Cluster.start({ label: 'bench_storm', instances: 4 }),
  ]);
  try {
    await cluster.startInstances({ REDIS_URL: redis.url, NO_COLOR: '1' });
    const cookie = await cluster.login();
    // One request per instance while the token is fresh: each gets the PDS's DPoP nonce.
    for (const instance of cluster.instances) {
      const res = await cluster.session(instance, cookie);
      if (res.status !== 200) throw new Error(`warm-up on ${instance.index}: ${res.status}`);
    }
    await cluster.pds.setTokenDelay(TOKEN_DELAY_MS);
    console.log(
      `4 instances with Redis, one signed-in user (t+${fmt((Date.now() - started) / 1000, 1)} s); ` +
        `bursts of ${BURST}, token delay at the PDS ${TOKEN_DELAY_MS} ms`,
    );
    const failures: string[] = [];
    const check = (b: Burst) => {
      for (const p of problems(b)) failures.push(`round ${b.round + 1} ${b.kind}: ${p}`);
    };
    if (!args.smoke) {
      // Unmeasured: compiles the hot paths and opens the client's connections.
      for (const kind of ['fresh', 'storm'] as const) {
        const b = await burst(cluster, cookie, kind, -1);
        console.log(`warm-up ${describe(b)}`);
        check(b);
      }
    }
    const bursts: Burst[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const order: Kind[] = r % 2 === 0 ? ['fresh', 'storm'] : ['storm', 'fresh'];
      for (const kind of order) {
        const b = await burst(cluster, cookie, kind, r);
        bursts.push(b);
        check(b);
        console.log(`round ${r + 1}/${ROUNDS} ${describe(b)}`);
      }
    }
    if (failures.length)
      throw new Error(`the bursts did not do what they measure:\n${failures.join('\n')}`);
    const command = `node --import ./bench/support/swc-hooks.mjs bench/storm/main.ts${
      process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''
    }`;
    console.log(
      `\n${command}: ${ROUNDS} round(s), each a burst of ${BURST} concurrent GET /api/session ` +
        'on a fresh session and one on a just-expired access token, alternating; latency of ' +
        'each request in the client, over https on loopback; median over the rounds (range); ' +
        'added: storm minus (and over) the fresh burst of the same round.\n',
    );
    if (args.smoke) console.log('(one round: these figures mean nothing)\n');
    console.log(report(bursts));
    const refreshAt = bursts.flatMap((b) => (b.refreshAtMs === undefined ? [] : [b.refreshAtMs]));
    console.log(
      `\nthe one refresh reached the PDS ${fmt(median(refreshAt))} ms (median) after the ` +
        'burst started; every answer was a 2xx and every storm made exactly one refresh',
    );
    if (args.json) writeFileSync(args.json, JSON.stringify(bursts, null, 2));
    if (args.smoke) {
      console.log(`\nbench/storm --smoke: passed in ${fmt((Date.now() - started) / 1000, 1)} s`);
    }
  } finally {
    await cluster.pds.setTokenDelay(0).catch(() => undefined);
    await cluster.stop().catch((error: unknown) => console.error('stopping the cluster:', error));
    await redis.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('bench/storm failed:', error);
    process.exit(1);
  },
);
