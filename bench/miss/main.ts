/**
 * The cache-miss benchmark (docs/benchmarks.md, "Cache miss and session restore"): what the
 * module pays when a request finds nothing in its caches, against the least the same work
 * can cost through the same driver, on PostgreSQL and SQLite with 100,000 app sessions.
 *
 * - **get**: the app-session store's `get(id)`, what `AppSessionService` reads on a cache
 *   miss (the first request of a session on an instance), through the module's own store and
 *   DataSource, against a raw primary-key read of the same row through the same driver and
 *   pool (a parametrised `pool.query` on `pg`, a prepared statement on better-sqlite3), mapped
 *   to the same record (the same `AppSessionRecord`, dates and nulls included). On
 *   PostgreSQL a named (server-side prepared) statement is measured for reference: what
 *   PostgreSQL's parse and plan of each statement cost.
 * - **restore**: `AtProtoAuthService.restore(did)` of a fresh OAuth session (what
 *   `@AtProtoSession()` triggers; no refresh, so no request to the authorization server),
 *   with Redis configured as in production (the distributed lock and the shared OAuth
 *   caches), against the bare work it cannot avoid: a raw primary-key read of the session
 *   row, the AES-256-GCM decryption of its two secret columns, the JSON parse of them, and
 *   the import of the DPoP key (`JoseKey.fromJWK`, which the OAuth client runs on every
 *   read of a session). The module reuses the session object it restored for a DID for a
 *   minute (while the stored session keeps its DPoP key): "restore (reused)" is that path
 *   alone (every DID restored once before the rounds, the window stretched over the run),
 *   "restore, first of its DID" the same module with the reuse off, what the first restore
 *   of a DID costs; "read+decrypt (no key import)" is the baseline without the key import,
 *   which a reuse does not do either.
 *
 * Every variant runs at 1, 10 and 50 concurrent callers; within one run the variants
 * alternate in rounds (the order rotates each round) and each read picks a random row, the
 * same sequence for both sides of a ratio. Per round: p50 and p99 latency of each variant and
 * their ratio to the baseline of the same round; the tables give the median over the rounds
 * and the range of the ratios.
 *
 *   node --import ./bench/support/swc-hooks.mjs bench/miss/main.ts            full run
 *   node --import ./bench/support/swc-hooks.mjs bench/miss/main.ts --smoke    checks only
 * Options: --rounds N (7), --ops N (2000 reads per variant, round and concurrency),
 *          --concurrency 1,10,50, --sessions N (100000 app sessions), --dids N (2000 OAuth
 *          sessions), --only postgres,sqlite, --parts get,restore (and breakdown: each step
 *          of a restore on its own, one caller), --json FILE.
 * @internal
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { Logger, Module, type DynamicModule, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { getDataSourceToken, TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { JoseKey, type NodeOAuthClient, type NodeSavedSession } from '@atproto/oauth-client-node';
import { DataSource } from 'typeorm';
import {
  AT_PROTO_APP_SESSION_STORE,
  AT_PROTO_OAUTH_CLIENT,
  AT_PROTO_SESSION_STORE,
  AtProtoAuthService,
  AtProtoModule,
  atProtoEntities,
  atProtoMigrations,
  getInstalledKeyRing,
  type AppSessionRecord,
  type AppSessionStore,
  type AtProtoSessionStore,
  type KeyRing,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../../test/support/databases.js';
import { startFakeAuthorizationServer } from '../../test/e2e/support/fake-authorization-server.js';
import { noRefreshScope, sessionLockName } from '../../lib/lock/lock-scope.js';
import {
  measure,
  ratioTable,
  type Results,
  type RoundResult,
  type Variant,
} from '../support/measure.js';
import { fmt, median, table } from '../support/report.js';
import { deleteRedisKeys } from '../support/redis-keys.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REDIS_URL = 'redis://127.0.0.1:6379';
/** One key for every app of the run: the key ring is process-wide (crypto/key-ring.registry.ts). */
const ENCRYPTION_KEY = randomBytes(32).toString('base64');

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '7' },
    ops: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '1,10,50' },
    sessions: { type: 'string', default: '100000' },
    dids: { type: 'string', default: '2000' },
    only: { type: 'string', default: 'postgres,sqlite' },
    parts: { type: 'string', default: 'get,restore' },
    json: { type: 'string' },
  },
});
const SMOKE = args.smoke;
const ROUNDS = SMOKE ? 1 : Number(args.rounds);
const OPS = SMOKE ? 100 : Number(args.ops);
const CONCURRENCY = args.concurrency.split(',').map(Number);
const SESSIONS = SMOKE ? 1000 : Number(args.sessions);
const DIDS = SMOKE ? 50 : Number(args.dids);
const DIALECTS = args.only.split(',') as Array<'postgres' | 'sqlite'>;
const PARTS = args.parts.split(',') as Array<'get' | 'restore' | 'breakdown'>;

type Dialect = 'postgres' | 'sqlite';

// --- the setup ------------------------------------------------------------------------------

interface Setup {
  dialect: Dialect;
  app: INestApplicationContext;
  dataSource: DataSource;
  appStore: AppSessionStore;
  auth: AtProtoAuthService;
  /** The same module with `redisCaches: false`: the OAuth client's caches in memory. */
  authLocalCaches: AtProtoAuthService;
  /** The same module with restored session objects never reused (every restore is cold). */
  authCold: AtProtoAuthService;
  /** The OAuth clients of both apps (Redis caches, in-memory caches), for the breakdown. */
  clients: { redis: NodeOAuthClient; memory: NodeOAuthClient };
  /** The module's OAuth session store (TypeORM). */
  sessionStore: AtProtoSessionStore;
  /** The issuer every OAuth session names. */
  issuer: string;
  keyRing: KeyRing;
  appSessionIds: string[];
  dids: string[];
  close(): Promise<void>;
}

/**
 * The app sessions, inserted by SQL inside the database as bench/http/main.ts seeds them:
 * every fifth one revoked or with a user agent left out, so that both the null and the
 * non-null mapping of those columns are read.
 */
async function seedAppSessions(ds: DataSource, dialect: Dialect): Promise<void> {
  const now = Date.now();
  const DAY = 86_400_000;
  const dids = Math.max(1, Math.floor(SESSIONS / 5));
  if (dialect === 'postgres') {
    await ds.query(
      `INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent)
       SELECT md5(n::text) || md5((n + 7)::text), 'did:web:u' || (n % ${dids})::text || '.example',
              ${now - DAY}, ${now + 20 * DAY}, ${now - 60_000},
              CASE WHEN n % 5 = 0 THEN ${now - 1000} END,
              CASE WHEN n % 5 = 1 THEN NULL ELSE 'bench ' || n::text END
       FROM generate_series(1, ${SESSIONS}) AS s(n)`,
    );
    await ds.query('ANALYZE atproto_app_session');
  } else {
    await ds.query(
      `WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ${SESSIONS})
       INSERT INTO atproto_app_session (id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent)
       SELECT lower(hex(randomblob(32))), 'did:web:u' || (n % ${dids}) || '.example',
              ${now - DAY}, ${now + 20 * DAY}, ${now - 60_000},
              CASE WHEN n % 5 = 0 THEN ${now - 1000} END,
              CASE WHEN n % 5 = 1 THEN NULL ELSE 'bench ' || n END
       FROM s`,
    );
    await ds.query('ANALYZE');
  }
}

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';
const randomPlc = () => `did:plc:${Array.from(randomBytes(24), (b) => B32[b % 32]).join('')}`;

async function setUp(dialect: Dialect, issuer: string, issuerHost: string): Promise<Setup> {
  const db = await createTestDatabase(dialect, 'bench_miss');
  const migrator = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
    migrationsRun: true,
  });
  await migrator.initialize();
  try {
    await seedAppSessions(migrator, dialect);
  } finally {
    await migrator.destroy();
  }
  const prefix = `bench-miss-${randomBytes(4).toString('hex')}:`;
  const signingKey = await JoseKey.generate(['ES256'], 'k1');

  const boot = async (redisCaches: boolean, label = redisCaches ? 'redis' : 'memory') => {
    // Named: the apps of one process each register a DataSource with @nestjs/typeorm.
    const name = `bench-miss-${dialect}-${label}`;
    @Module({
      imports: [
        TypeOrmModule.forRoot({
          ...db.options,
          name,
          entities: [...atProtoEntities],
          migrationsRun: false,
        } as TypeOrmModuleOptions),
        AtProtoModule.forRoot({
          publicUrl: 'https://app.bench.example',
          clientName: 'bench',
          keys: [signingKey.privateJwk as never],
          encryption: { activeKeyId: 'k', keys: { k: ENCRYPTION_KEY } },
          // As in production with several instances: the Redlock session lock and the OAuth
          // client's caches (server metadata, DID documents) shared through Redis; the
          // reference app keeps those caches in its own memory (the client's default).
          redis: REDIS_URL,
          redisKeyPrefix: prefix,
          redisCaches,
          // The authorization server is the fake one on loopback, answering metadata only.
          allowHttpServers: true,
          dangerouslyAllowPrivateHosts: [issuerHost],
          cleanup: { enabled: false },
          dataSourceName: name,
        }) as DynamicModule,
      ],
    })
    class BenchMissModule {}
    const context = await NestFactory.createApplicationContext(BenchMissModule, {
      logger: ['error'],
    });
    return { context, dataSource: context.get<DataSource>(getDataSourceToken(name)) };
  };
  const { context: app, dataSource } = await boot(true);
  const { context: localCaches } = await boot(false);
  // The same as `app`, without reusing restored session objects: every restore is the first
  // of its DID (what a user's first request after a minute costs).
  const { context: cold } = await boot(true, 'cold');
  cold.get(AtProtoAuthService).restoredReuseMs = 0;
  // The reference app with the OAuth client's caches in memory measures the first restore
  // too; the main app keeps every restored object for the whole run and is primed before it
  // (checks()), so that "restore" is the reused path alone, every call a reuse.
  localCaches.get(AtProtoAuthService).restoredReuseMs = 0;
  app.get(AtProtoAuthService).restoredReuseMs = 24 * 3_600_000;
  const sessionStore = app.get<AtProtoSessionStore>(AT_PROTO_SESSION_STORE);
  const dids: string[] = [];
  for (let i = 0; i < DIDS; i++) {
    const did = randomPlc();
    const dpop = await JoseKey.generate(['ES256']);
    const value = {
      dpopJwk: dpop.privateJwk!,
      authMethod: { method: 'private_key_jwt', kid: 'k1' },
      tokenSet: {
        iss: issuer,
        sub: did,
        aud: issuer,
        scope: 'atproto transition:generic',
        access_token: `access-${randomBytes(48).toString('base64url')}`,
        refresh_token: `refresh-${randomBytes(48).toString('base64url')}`,
        token_type: 'DPoP',
        // Fresh for the whole run: no restore refreshes.
        expires_at: new Date(Date.now() + 10 * 3_600_000).toISOString(),
      },
    } as unknown as NodeSavedSession;
    await sessionStore.set(did, value);
    dids.push(did);
  }
  const rows = (await dataSource.query('SELECT id FROM atproto_app_session')) as Array<{
    id: string;
  }>;
  if (rows.length !== SESSIONS) throw new Error(`seeded ${rows.length} app sessions`);
  return {
    dialect,
    app,
    dataSource,
    appStore: app.get<AppSessionStore>(AT_PROTO_APP_SESSION_STORE),
    auth: app.get(AtProtoAuthService),
    authLocalCaches: localCaches.get(AtProtoAuthService),
    authCold: cold.get(AtProtoAuthService),
    clients: {
      redis: app.get<NodeOAuthClient>(AT_PROTO_OAUTH_CLIENT),
      memory: localCaches.get<NodeOAuthClient>(AT_PROTO_OAUTH_CLIENT),
    },
    sessionStore,
    issuer,
    keyRing: getInstalledKeyRing()!,
    appSessionIds: rows.map((r) => r.id),
    dids,
    close: async () => {
      await localCaches.close();
      await cold.close();
      await app.close();
      await db.drop();
      await deleteRedisKeys(prefix, REDIS_URL).catch(() => undefined);
    },
  };
}

// --- the baselines --------------------------------------------------------------------------

/** The columns of one app-session row as a driver hands them back. */
interface AppSessionRow {
  id: string;
  did: string;
  created_at: string | number;
  expires_at: string | number;
  last_seen_at: string | number;
  revoked_at: string | number | null;
  user_agent: string | null;
}

const APP_SESSION_SQL =
  'SELECT id, did, created_at, expires_at, last_seen_at, revoked_at, user_agent ' +
  'FROM atproto_app_session WHERE id = $1';

function toRecord(r: AppSessionRow): AppSessionRecord {
  return {
    id: r.id,
    did: r.did,
    createdAt: new Date(Number(r.created_at)),
    expiresAt: new Date(Number(r.expires_at)),
    lastSeenAt: new Date(Number(r.last_seen_at)),
    revokedAt: r.revoked_at === null ? null : new Date(Number(r.revoked_at)),
    userAgent: r.user_agent,
  };
}

interface PgPool {
  query<R>(config: { name?: string; text: string; values: unknown[] }): Promise<{ rows: R[] }>;
}
interface SqliteStatement {
  get(...params: unknown[]): unknown;
}

/**
 * A primary-key read through the DataSource's own driver and pool, with no ORM: on
 * PostgreSQL a parametrised query (`pool.query({ text, values })`, the extended protocol with
 * an unnamed statement), or with `named` a named statement, prepared once per connection; on
 * better-sqlite3 a statement prepared once.
 */
function rawPkRead<R>(
  ds: DataSource,
  dialect: Dialect,
  sql: string,
  named = false,
): (key: string) => Promise<R | undefined> {
  if (dialect === 'postgres') {
    const pool = (ds.driver as unknown as { master: PgPool }).master;
    const name = `bench_${createHash('sha256').update(sql).digest('hex').slice(0, 16)}`;
    if (!named) return async (key) => (await pool.query<R>({ text: sql, values: [key] })).rows[0];
    return async (key) => (await pool.query<R>({ name, text: sql, values: [key] })).rows[0];
  }
  const db = (
    ds.driver as unknown as { databaseConnection: { prepare(sql: string): SqliteStatement } }
  ).databaseConnection;
  const statement = db.prepare(sql.replace('$1', '?'));
  return async (key) => statement.get(key) as R | undefined;
}

interface OAuthSessionRow {
  token_set: unknown;
  dpop_key: unknown;
  auth_method: string;
}

/** A `json` column's value: parsed by pg (the envelope string), JSON text on SQLite. */
function envelopeOf(raw: unknown): string {
  const text = Buffer.isBuffer(raw) ? raw.toString('utf8') : raw;
  if (typeof text !== 'string') throw new TypeError('not a string column');
  return text.startsWith('"') ? (JSON.parse(text) as string) : text;
}

// --- measuring ------------------------------------------------------------------------------

interface Comparison {
  label: string;
  /** What every ratio of this comparison is taken against. */
  baseline: Variant;
  /** The module's path first; other variants (references) after it. */
  subjects: Variant[];
  keys: string[];
}

/** Per comparison, per concurrency, per variant id: one result per round. */

async function compare(comparisons: Comparison[]): Promise<Results> {
  const results: Results = {};
  for (const c of comparisons) {
    results[c.label] = {};
    for (const n of CONCURRENCY) {
      results[c.label]![n] = Object.fromEntries(
        [c.baseline, ...c.subjects].map((v) => [v.id, [] as RoundResult[]]),
      );
    }
    // Warm-up: JIT, pools, prepared statements, the OAuth client's metadata cache.
    const warm = c.keys.slice(0, Math.min(c.keys.length, SMOKE ? 20 : 500));
    for (const v of [c.baseline, ...c.subjects]) await measure(v, warm, 10);
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of comparisons) {
      for (const n of CONCURRENCY) {
        // The same random sequence for every variant; a new one each round.
        const keys = Array.from({ length: OPS }, () => c.keys[randomInt(c.keys.length)]!);
        const variants = [c.baseline, ...c.subjects];
        // Rotate the order: no variant always runs first or after the same one.
        const order = variants.map((_, i) => variants[(i + r) % variants.length]!);
        const round: Record<string, RoundResult> = {};
        for (const v of order) {
          round[v.id] = await measure(v, keys, n);
          results[c.label]![n]![v.id]!.push(round[v.id]!);
        }
        const b = round[c.baseline.id]!;
        console.log(
          `round ${r + 1}/${ROUNDS} ${c.label} ×${n}: ${c.baseline.id} p50 ${fmt(b.p50)} µs p99 ${fmt(b.p99)} µs; ` +
            c.subjects
              .map((v) => {
                const x = round[v.id]!;
                return `${v.id} p50 ${fmt(x.p50)} µs (${fmt(x.p50 / b.p50, 2)}×) p99 ${fmt(x.p99)} µs (${fmt(x.p99 / b.p99, 2)}×)`;
              })
              .join('; '),
        );
      }
    }
  }
  return results;
}

/**
 * Where a restore's time goes: each step of `AtProtoAuthService.restore(did)` on its own,
 * one caller, sequentially, in rounds (median µs per call over the rounds). The steps
 * overlap (the client's restore contains its session read and the metadata lookup): they
 * show what each costs, not a sum.
 */
async function breakdown(s: Setup): Promise<string> {
  // Kept as JSON and parsed for each call, as each request reads the session anew: jose
  // caches a key imported from a JWK by the JWK object, which a reused object would hit.
  const stored = new Map<string, string>();
  for (const did of s.dids) stored.set(did, JSON.stringify(await s.sessionStore.get(did)));
  const session = (did: string) => JSON.parse(stored.get(did)!) as NodeSavedSession;
  const scoped = (did: string, fn: () => Promise<unknown>) =>
    noRefreshScope.run({ lockName: sessionLockName(did), did, session: session(did) }, fn);
  const steps: Array<[string, (did: string) => Promise<unknown>]> = [
    ['the OAuth session store read (row, 2 decryptions, JSON)', (did) => s.sessionStore.get(did)],
    ['DPoP key import (JoseKey.fromJWK)', (did) => JoseKey.fromJWK(session(did).dpopJwk)],
    [
      'authorization server metadata, Redis cache',
      () =>
        s.clients.redis.oauthResolver.getAuthorizationServerMetadata(s.issuer, {
          allowStale: true,
        }),
    ],
    [
      'authorization server metadata, in-memory cache',
      () =>
        s.clients.memory.oauthResolver.getAuthorizationServerMetadata(s.issuer, {
          allowStale: true,
        }),
    ],
    [
      "the client's restore(did, false), no-refresh scope, Redis cache",
      (did) => scoped(did, () => s.clients.redis.restore(did, false)),
    ],
    [
      "the client's restore(did, false), no-refresh scope, in-memory cache",
      (did) => scoped(did, () => s.clients.memory.restore(did, false)),
    ],
    [
      "the store read, then the client's restore in its scope, in-memory cache",
      async (did) => {
        const read = (await s.sessionStore.get(did))!;
        const scope = { lockName: sessionLockName(did), did, session: read };
        return noRefreshScope.run(scope, () => s.clients.memory.restore(did, false));
      },
    ],
    ['AtProtoAuthService.restore(did), Redis cache', (did) => s.auth.restore(did)],
    ['AtProtoAuthService.restore(did), in-memory cache', (did) => s.authLocalCaches.restore(did)],
  ];
  const times = new Map<string, number[]>(steps.map(([label]) => [label, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const [label, fn] of steps) {
      const keys = Array.from({ length: OPS }, () => s.dids[randomInt(s.dids.length)]!);
      if (r === 0) for (const k of keys.slice(0, 200)) await fn(k);
      const t0 = performance.now();
      for (const k of keys) await fn(k);
      times.get(label)!.push(((performance.now() - t0) * 1000) / OPS);
    }
  }
  return table([
    [`${s.dialect}: step, 1 caller`, 'µs per call (median)', 'least–most'],
    ...steps.map(([label]) => {
      const xs = times.get(label)!;
      return [label, fmt(median(xs)), `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`];
    }),
  ]);
}

// --- the run --------------------------------------------------------------------------------

function version(pkg: string): string {
  return (
    JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
}

async function checks(s: Setup, get: (id: string) => Promise<AppSessionRecord | undefined>) {
  // The two sides of each comparison must do the same work: compare what they return.
  for (const id of s.appSessionIds.slice(0, 200)) {
    const [a, b] = [await s.appStore.get(id), await get(id)];
    if (!a || !isDeepStrictEqual(a, b)) {
      throw new Error(`${s.dialect}: the store and the raw read disagree on app session ${id}`);
    }
  }
  if ((await s.appStore.get('0'.repeat(64))) !== undefined) throw new Error('unknown id found');
  const session = await s.auth.restore(s.dids[0]!);
  if (session.did !== s.dids[0]) throw new Error(`${s.dialect}: restore returned another DID`);
  // Primes the reused path: every DID restored once, so every later restore is a reuse.
  for (const did of s.dids) await s.auth.restore(did);
  if (s.auth.restoredCount !== s.dids.length) {
    throw new Error(
      `${s.dialect}: ${s.auth.restoredCount} restored objects kept, not ${s.dids.length}`,
    );
  }
}

async function main(): Promise<void> {
  // Nest's own logger: warnings only (the module warns about the loopback test server).
  Logger.overrideLogger(['error']);
  const fake = await startFakeAuthorizationServer();
  const all: Record<string, Results> = {};
  const setups: Setup[] = [];
  try {
    console.log(
      `cpu: ${cpus()[0]?.model ?? '?'} × ${availableParallelism()}, load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}\nnode ${process.versions.node}, typeorm ${version('typeorm')}, pg ${version(
        'pg',
      )}, better-sqlite3 ${version('better-sqlite3')}, @atproto/oauth-client ${version(
        '@atproto/oauth-client',
      )}, jose ${version('jose')}, ioredis ${version('ioredis')}`,
    );
    const comparisons: Comparison[] = [];
    for (const dialect of DIALECTS) {
      const t0 = Date.now();
      const s = await setUp(dialect, fake.origin, fake.host);
      setups.push(s);
      if (dialect === 'postgres') {
        const [row] = (await s.dataSource.query('SHOW server_version')) as Array<{
          server_version: string;
        }>;
        console.log(`PostgreSQL ${row?.server_version}`);
      }
      console.log(
        `${dialect}: ${fmt(SESSIONS)} app sessions, ${fmt(DIDS)} OAuth sessions seeded in ${fmt(
          (Date.now() - t0) / 1000,
          1,
        )} s`,
      );
      const appRow = rawPkRead<AppSessionRow>(s.dataSource, dialect, APP_SESSION_SQL);
      const rawGet = async (id: string) => {
        const row = await appRow(id);
        return row ? toRecord(row) : undefined;
      };
      const oauthRow = rawPkRead<OAuthSessionRow>(
        s.dataSource,
        dialect,
        'SELECT token_set, dpop_key, auth_method FROM atproto_oauth_session WHERE did = $1',
      );
      const ring = s.keyRing;
      await checks(s, rawGet);
      if (PARTS.includes('get')) {
        const subjects: Variant[] = [{ id: 'store.get', run: (id) => s.appStore.get(id) }];
        if (dialect === 'postgres') {
          // For reference: the same read as a named (server-side prepared) statement, parsed
          // and planned once per connection, which the module does not use (see
          // lib/storage/typeorm/primary-key-read.ts).
          const named = rawPkRead<AppSessionRow>(s.dataSource, dialect, APP_SESSION_SQL, true);
          subjects.push({
            id: 'raw, named prepared',
            run: async (id) => {
              const row = await named(id);
              return row ? toRecord(row) : undefined;
            },
          });
        }
        comparisons.push({
          label: `get ${dialect}`,
          baseline: { id: 'raw', run: rawGet },
          subjects,
          keys: s.appSessionIds,
        });
      }
      if (PARTS.includes('restore')) {
        // The session row read raw, its two secret columns decrypted and parsed.
        const readDecrypt = async (did: string) => {
          const row = (await oauthRow(did))!;
          const tokenSet = JSON.parse(
            ring.decrypt(envelopeOf(row.token_set), 'atproto_oauth_session.token_set'),
          ) as { sub: string };
          const jwk = JSON.parse(
            ring.decrypt(envelopeOf(row.dpop_key), 'atproto_oauth_session.dpop_key'),
          ) as Parameters<typeof JoseKey.fromJWK>[0];
          return { tokenSet, jwk, authMethod: JSON.parse(row.auth_method) as unknown };
        };
        comparisons.push({
          label: `restore ${dialect}`,
          baseline: {
            id: 'read+decrypt+import',
            run: async (did) => {
              const { jwk, ...rest } = await readDecrypt(did);
              return { ...rest, key: await JoseKey.fromJWK(jwk) };
            },
          },
          subjects: [
            { id: 'restore (reused)', run: (did) => s.auth.restore(did) },
            { id: 'restore, first of its DID', run: (did) => s.authCold.restore(did) },
            {
              id: 'restore, first of its DID, caches in memory',
              run: (did) => s.authLocalCaches.restore(did),
            },
            {
              // For reference: the baseline without the key import, which a reused restore
              // does not do either (it compares a hash of the stored key instead).
              id: 'read+decrypt (no key import)',
              run: readDecrypt,
            },
          ],
          keys: s.dids,
        });
      }
    }
    if (PARTS.includes('breakdown')) {
      for (const s of setups) console.log(`\n${await breakdown(s)}`);
    }
    if (comparisons.length === 0) return;
    const results = await compare(comparisons);
    all.results = results;
    console.log(
      `\nbench/miss: ${SMOKE ? 'smoke (one short round: the figures mean nothing)' : `${ROUNDS} rounds`} of ` +
        `${fmt(OPS)} reads per variant and concurrency, random rows; p50/p99: median over the ` +
        'rounds; ratio: module / baseline within each round, median (least–most).\n',
    );
    console.log(ratioTable(results, comparisons, CONCURRENCY));
    if (args.json) writeFileSync(args.json, JSON.stringify(all, null, 2));
  } finally {
    for (const s of setups) await s.close().catch((e: unknown) => console.error(e));
    await fake.close();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('bench/miss failed:', error);
    process.exit(1);
  },
);
