/**
 * The variants of the HTTP benchmark (docs/benchmarks.md), shared by the driver (main.ts) and
 * the server processes (server.ts). Each is one NestJS 12 app on Express serving `GET /me`:
 * the caller's DID, or a constant where no credential is read.
 * @internal
 */
import type { DataSourceOptions } from 'typeorm';

/** @internal */
export type VariantId =
  | 'unguarded'
  | 'noop-guard'
  | 'passport-jwt'
  | 'express-session'
  | 'atproto-public'
  | 'cookie-hit-pg'
  | 'cookie-off-pg'
  | 'cookie-hit-sqlite'
  | 'cookie-off-sqlite'
  | 'bearer-hit-pg'
  | 'api-key-hit-pg';

/** @internal */
export interface VariantSpec {
  id: VariantId;
  /** One line for the results table. */
  label: string;
  /** The database the app reads (a fresh one of the run's own, seeded before boot). */
  storage?: 'postgres' | 'sqlite';
  /** Uses the shared Redis (keys under a prefix of the run's own, deleted afterwards). */
  redis?: boolean;
  /** Answers 401 without a credential (every variant but the two open routes). */
  guarded: boolean;
  /** AtProtoModule's `appSession.cacheTtl` for the library's variants. */
  cacheTtl?: number;
}

/** In the order of the results table; the first is the baseline of every ratio. */
export const VARIANTS: readonly VariantSpec[] = [
  { id: 'unguarded', label: 'unguarded route (no guard, no AtProtoModule)', guarded: false },
  { id: 'noop-guard', label: 'no-op global guard (a cookie header exists)', guarded: true },
  {
    id: 'atproto-public',
    label: 'AtProtoModule, @Public() route, no credential',
    storage: 'postgres',
    guarded: false,
  },
  {
    id: 'cookie-hit-pg',
    label: 'AtProtoAuthGuard, cookie, cache hit (default cacheTtl), PostgreSQL',
    storage: 'postgres',
    guarded: true,
  },
  {
    id: 'cookie-hit-sqlite',
    label: 'AtProtoAuthGuard, cookie, cache hit (default cacheTtl), SQLite',
    storage: 'sqlite',
    guarded: true,
  },
  {
    id: 'bearer-hit-pg',
    label: 'AtProtoAuthGuard, native access token, caches hit, PostgreSQL',
    storage: 'postgres',
    guarded: true,
  },
  {
    id: 'api-key-hit-pg',
    label: 'AtProtoAuthGuard, API key, cache hit, PostgreSQL',
    storage: 'postgres',
    guarded: true,
  },
  {
    id: 'express-session',
    label: 'express-session + connect-redis',
    redis: true,
    guarded: true,
  },
  {
    id: 'passport-jwt',
    label: '@nestjs/passport + passport-jwt (HS256)',
    guarded: true,
  },
  {
    id: 'cookie-off-pg',
    label: 'AtProtoAuthGuard, cookie, cacheTtl 0 (one read per request), PostgreSQL',
    storage: 'postgres',
    guarded: true,
    cacheTtl: 0,
  },
  {
    id: 'cookie-off-sqlite',
    label: 'AtProtoAuthGuard, cookie, cacheTtl 0 (one read per request), SQLite',
    storage: 'sqlite',
    guarded: true,
    cacheTtl: 0,
  },
];

/** What the driver hands a server process (environment variable `BENCH_SERVER`, JSON). */
export interface ServerConfig {
  variant: VariantId;
  database?: DataSourceOptions;
  redisUrl?: string;
  /** Key prefix of express-session's store, unique to the run. */
  redisPrefix?: string;
  /** Overrides of AtProtoModule's `appSession` cache options (the memory run's). */
  appSession?: { cacheTtl?: number; cacheMaxEntries?: number; invalidatedCacheTtl?: number };
}

/** Request headers. */
export type Headers = Record<string, string>;

/** Server → driver, once listening. */
export interface ReadyMessage {
  type: 'ready';
  port: number;
  /** The DID `GET /me` must answer with the valid credential. */
  did: string;
  /** Headers carrying a valid credential (empty for the open routes). */
  valid: Headers;
  /** Headers carrying a well-formed credential that the guard must refuse, if any. */
  forged?: Headers;
}

/** Server → driver: counters since the process started (the driver takes differences). */
export interface StatsMessage {
  type: 'stats';
  /** `process.cpuUsage()`, µs. */
  cpu: { user: number; system: number };
  /** HTTP requests the server has received. */
  requests: number;
  /** SQL statements TypeORM has run. */
  queries: number;
  /** Of those, reads of one app session by id (a miss of the app-session cache). */
  sessionReads: number;
  /** `performance.eventLoopUtilization()`, ms. */
  elu: { idle: number; active: number };
  /** Garbage collections and their total duration (ms). */
  gc: { count: number; ms: number };
  /** `process.hrtime.bigint()` in µs (the clock of a `--cpu-prof` profile). */
  hrtimeUs: number;
  /** Promises created (only when the server counts them, see `BENCH_COUNT_PROMISES`). */
  promises?: number;
}

/** Driver → server. */
export type ControlMessage =
  | { type: 'stats' }
  | { type: 'memory' }
  | { type: 'heap-start' }
  | { type: 'heap-stop' }
  | { type: 'exit' };

/**
 * Server → driver: `process.memoryUsage()` in bytes, after forced full garbage collections
 * when the server runs with `--expose-gc` (`gcForced`), so that only what is retained counts.
 */
export interface MemoryMessage {
  type: 'memory';
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  gcForced: boolean;
  /** Resident memory by kind of mapping, bytes (Linux only; see server.ts). */
  rssParts?: { cHeap: number; anonymous: number; files: number };
}

/** Server → driver: a sampling heap profile (inspector `HeapProfiler.SamplingHeapProfile`). */
export interface HeapMessage {
  type: 'heap';
  profile: HeapProfileNode;
}

/** @internal */
export interface HeapProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapProfileNode[];
}

/** The DID every benchmark credential belongs to. */
export const BENCH_DID = 'did:plc:abcdefghijklmnopqrstuvwx';
