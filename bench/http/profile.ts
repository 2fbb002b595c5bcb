/**
 * Reads the `--cpu-prof` profile and the sampling heap profile of a server process of the
 * HTTP benchmark (docs/benchmarks.md, `npm run bench -- --profile`) and says where a
 * request's time and allocations go, per request.
 * @internal
 */
import type { HeapProfileNode } from './variants.js';

/** The parts of a `.cpuprofile` (V8's `Profiler.Profile`) read here. @internal */
export interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }>;
  /** µs, on the clock of `process.hrtime()`. */
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/**
 * Where a sample's time is counted. A sample counts in every category one of its frames
 * matches (a cookie parsed inside the guard counts for both), so categories overlap; the
 * self-time table (by file) does not.
 */
const CATEGORIES: ReadonlyArray<[string, (f: Frame) => boolean, ((stack: Frame[]) => boolean)?]> = [
  ['AtProtoAuthGuard (its synchronous parts, all below)', (f) => f.url.includes('/lib/guards/')],
  [
    'cookie parsing (readCookie, cookie.parse)',
    (f) => f.name === 'readCookie' || f.url.includes('/node_modules/cookie/'),
  ],
  [
    'hashing in the module (SHA-256 of the token: idOf, createHash, digest)',
    (f) => f.name === 'idOf',
    (stack) => stack.some(isLib) && stack.some((f) => f.url.includes('internal/crypto')),
  ],
  [
    'app-session validation and cache (AppSessionService)',
    (f) => f.url.includes('/lib/session/app-session.service'),
  ],
  [
    'route metadata lookups (Reflector, reflect-metadata)',
    (f) => f.url.includes('/services/reflector.service') || f.url.includes('/reflect-metadata/'),
  ],
  [
    "the module's interceptor (AsyncLocalStorage scope, rxjs catchError)",
    (f) => f.url.includes('/lib/filters/at-proto-session-error.interceptor'),
  ],
  [
    'AsyncLocalStorage (any)',
    (f) => f.url.includes('async_local_storage') || f.url.includes('async_hooks'),
  ],
  ['rxjs (Nest interceptor pipeline)', (f) => f.url.includes('/node_modules/rxjs/')],
  [
    "the module's exception filter",
    (f) => f.url.includes('/lib/filters/at-proto-exception.filter'),
  ],
  ["Nest's guards consumer and context", (f) => /@nestjs\/core\/(guards|helpers)\//.test(f.url)],
  ["Nest's interceptors consumer", (f) => f.url.includes('@nestjs/core/interceptors/')],
  [
    'database reads (TypeORM, pg, better-sqlite3: cache misses)',
    (f) => /\/node_modules\/(typeorm|pg|pg-pool|pg-protocol|better-sqlite3)\//.test(f.url),
  ],
  [
    "Express's ETag (SHA-1 of every body, all variants)",
    (f) => f.url.includes('/node_modules/etag/'),
  ],
  ['garbage collection (allocations)', (f) => f.name === '(garbage collector)'],
];

function isLib(f: Frame): boolean {
  return /\/lib\/.+\.ts$/.test(f.url) && !f.url.includes('/node_modules/');
}

/** Self time by file group: each sample counted once, by its innermost frame. */
function groupOf(f: Frame): string {
  if (f.name === '(garbage collector)') return '(garbage collector)';
  if (f.name === '(program)') return '(program: V8 and native code)';
  const lib = /\/lib\/(.+)\.ts$/.exec(f.url);
  if (lib && !f.url.includes('/node_modules/')) return `lib/${lib[1]}.ts`;
  // Nest by folder (router, guards, interceptors...), other packages whole.
  const pkg = /.*\/node_modules\/(@nestjs\/[^/]+\/[^/]+(?=\/)|(?:@[^/]+\/)?[^/]+)/.exec(f.url);
  if (pkg) return pkg[1]!;
  if (f.url.startsWith('node:')) {
    const m = /^node:(?:internal\/)?([^/]+)/.exec(f.url);
    return `node:${m?.[1] ?? f.url}`;
  }
  return f.url ? 'other' : `(${f.name || 'anonymous native'})`;
}

interface Frame {
  name: string;
  url: string;
}

/** @internal */
export interface CpuBreakdown {
  requests: number;
  /** Non-idle CPU per request, µs (under the profiler, which adds its own cost). */
  busyUs: number;
  /** µs per request by category (overlapping). */
  categories: Array<[string, number]>;
  /** µs per request by file group of the innermost frame (adds up to busyUs). */
  groups: Array<[string, number]>;
  /** µs per request by innermost function, top ones. */
  functions: Array<[string, number]>;
}

/**
 * The samples of `profile` taken between `fromUs` and `toUs` (µs, `process.hrtime()`),
 * per request (`requests` served in that window).
 */
export function analyseCpuProfile(
  profile: CpuProfile,
  fromUs: number,
  toUs: number,
  requests: number,
): CpuBreakdown {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const frame = (id: number): Frame => {
    const cf = byId.get(id)!.callFrame;
    return { name: cf.functionName, url: cf.url };
  };
  const cat = new Map<string, number>();
  const groups = new Map<string, number>();
  const functions = new Map<string, number>();
  let busy = 0;
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0;
    t += delta;
    // A sample stands for the time since the previous one.
    if (t < fromUs || t > toUs) continue;
    const leafId = profile.samples[i]!;
    const leaf = frame(leafId);
    if (leaf.name === '(idle)') continue;
    busy += delta;
    const g = groupOf(leaf);
    groups.set(g, (groups.get(g) ?? 0) + delta);
    const fn = `${leaf.name || '(anonymous)'} ${shortUrl(leaf.url)}`.trim();
    functions.set(fn, (functions.get(fn) ?? 0) + delta);
    const stack: Frame[] = [];
    for (let id: number | undefined = leafId; id !== undefined; id = parent.get(id)) {
      stack.push(frame(id));
    }
    for (const [label, match, whole] of CATEGORIES) {
      if (stack.some(match) || whole?.(stack)) cat.set(label, (cat.get(label) ?? 0) + delta);
    }
  }
  const per = (m: Map<string, number>) =>
    [...m].map(([k, v]): [string, number] => [k, v / requests]).sort((a, b) => b[1] - a[1]);
  return {
    requests,
    busyUs: busy / requests,
    categories: CATEGORIES.map(([label]) => [label, (cat.get(label) ?? 0) / requests]),
    groups: per(groups),
    functions: per(functions).slice(0, 25),
  };
}

/** Bytes allocated per request by allocating function, from a sampling heap profile. */
export function analyseHeapProfile(
  head: HeapProfileNode,
  requests: number,
): { total: number; functions: Array<[string, number]> } {
  const by = new Map<string, number>();
  let total = 0;
  const walk = (n: HeapProfileNode) => {
    if (n.selfSize > 0) {
      const key = `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}`;
      by.set(key, (by.get(key) ?? 0) + n.selfSize);
      total += n.selfSize;
    }
    n.children.forEach(walk);
  };
  walk(head);
  return {
    total: total / requests,
    functions: [...by]
      .map(([k, v]): [string, number] => [k, v / requests])
      .sort((a, b) => b[1] - a[1])
      .slice(0, 15),
  };
}

function shortUrl(url: string): string {
  if (!url) return '';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + '/node_modules/'.length);
  const lib = /\/(lib|bench)\/(.+)$/.exec(url);
  return lib ? `${lib[1]}/${lib[2]}` : url.replace(/^file:\/\//, '');
}
