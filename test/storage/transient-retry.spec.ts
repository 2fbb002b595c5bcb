import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import mysql2 from 'mysql2';
import mysqlPromise from 'mysql2/promise';
import pg from 'pg';
import { DataSource, type DataSourceOptions, QueryFailedError } from 'typeorm';
import {
  AtProtoStoreError,
  atProtoEntities,
  atProtoMigrations,
  isTransientDatabaseError,
  type TransientRetryOptions,
  TypeOrmSessionStore,
  TypeOrmStateStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase, DIALECTS } from '../support/databases.js';
import { installTestKeyRing } from '../support/key-ring.js';
import { randomDid, sessionValue, stateValue } from '../support/raw-sql.js';
import Database from 'better-sqlite3';

// The OAuth client revokes a session it fails to persist, so a store write must ride out a
// lock timeout, a deadlock, a busy SQLite file or a killed connection instead of failing at
// once. These tests cause each failure for real, on a database of their own, and watch
// the retries through the `onRetry` hook.

installTestKeyRing();

const TTL_MS = 3_600_000;
const QUERY_FAILED = { name: 'QueryFailedError' };

/** Records every failure the store retried. */
function observe(options: TransientRetryOptions = {}) {
  const failures: unknown[] = [];
  const retry: TransientRetryOptions = {
    maxAttempts: 30,
    maxElapsedMs: 20_000,
    ...options,
    onRetry: (error) => failures.push(error),
  };
  return { failures, retry };
}

function driverError(error: unknown): { code?: unknown; errno?: unknown; message?: unknown } {
  const e = error as { driverError?: unknown };
  return (e instanceof QueryFailedError ? e.driverError : e) as never;
}

async function migrated(options: DataSourceOptions): Promise<void> {
  const ds = new DataSource({
    ...options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
  });
  await ds.initialize();
  try {
    await ds.runMigrations();
  } finally {
    await ds.destroy();
  }
}

describe('transient failures on PostgreSQL', () => {
  let admin: pg.Client;
  let name: string;
  let drop: () => Promise<void>;
  let base: DataSourceOptions;
  const opened: DataSource[] = [];

  /** A DataSource of its own whose connections carry `applicationName` and `-c` settings. */
  async function dataSource(applicationName: string, settings = ''): Promise<DataSource> {
    const ds = new DataSource({
      ...base,
      entities: [...atProtoEntities],
      applicationName,
      extra: settings ? { options: settings } : {},
    } as DataSourceOptions);
    await ds.initialize();
    opened.push(ds);
    return ds;
  }

  /** A plain pg connection to the test database that takes the table lock. */
  async function lockTable(): Promise<{ release: () => Promise<void> }> {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: 5432,
      user: 'postgres',
      database: name,
    });
    await client.connect();
    await client.query('BEGIN');
    await client.query('LOCK TABLE atproto_oauth_session IN ACCESS EXCLUSIVE MODE');
    let released: Promise<void> | undefined;
    return {
      release: () =>
        (released ??= client
          .query('COMMIT')
          .then(() => client.end())
          .then(() => undefined)),
    };
  }

  beforeAll(async () => {
    const db = await createTestDatabase('postgres', 'transient_retry');
    ({ name, drop } = db);
    base = db.options;
    await migrated(base);
    admin = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: name });
    await admin.connect();
  });

  afterAll(async () => {
    for (const ds of opened) await ds.destroy().catch(() => undefined);
    await admin?.end();
    await drop?.();
  });

  it('retries lock timeouts until the lock is released, then stores the new value', async () => {
    const ds = await dataSource(
      `atp-lock-${randomBytes(4).toString('hex')}`,
      '-c lock_timeout=150',
    );
    // The setting really reaches the server (else the write would just wait for the lock).
    expect(await ds.query('SHOW lock_timeout')).toEqual([{ lock_timeout: '150ms' }]);
    const { failures, retry } = observe();
    const store = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS, retry });
    const did = randomDid();
    await store.set(did, sessionValue(did));

    const lock = await lockTable();
    const releasing = sleep(600).then(() => lock.release());
    const next = sessionValue(did);
    try {
      await store.set(did, next);
    } finally {
      await releasing;
    }

    expect(failures.length).toBeGreaterThanOrEqual(1);
    for (const f of failures) expect(driverError(f).code).toBe('55P03'); // lock_not_available
    expect(await store.get(did)).toEqual(next);
  });

  it('gives up when the time budget runs out: AtProtoStoreError caused by the driver error, old value intact', async () => {
    const ds = await dataSource(
      `atp-budget-${randomBytes(4).toString('hex')}`,
      '-c lock_timeout=150',
    );
    const { failures, retry } = observe({ maxElapsedMs: 700 });
    const store = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS, retry });
    const did = randomDid();
    const old = sessionValue(did);
    await store.set(did, old);

    const lock = await lockTable(); // held until the write has given up
    let error: unknown;
    try {
      error = await store.set(did, sessionValue(did)).then(
        () => undefined,
        (e: unknown) => e,
      );
    } finally {
      await lock.release();
    }

    expect(error).toBeInstanceOf(AtProtoStoreError);
    expect((error as Error).message).toMatch(/^Saving an OAuth session failed after \d+ attempts/);
    const cause = (error as Error).cause;
    expect(cause).toBeInstanceOf(QueryFailedError);
    expect(driverError(cause)).toBeInstanceOf(pg.DatabaseError);
    expect(driverError(cause).code).toBe('55P03');
    expect(failures.length).toBeGreaterThanOrEqual(1);
    expect(await store.get(did)).toEqual(old);
  });

  it('survives its connection being killed in the middle of a write', async () => {
    const app = `atp-kill-${randomBytes(4).toString('hex')}`;
    const ds = await dataSource(app); // no lock_timeout: the write waits on the lock
    const { failures, retry } = observe();
    const store = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS, retry });
    const did = randomDid();
    await store.set(did, sessionValue(did));

    const lock = await lockTable();
    const next = sessionValue(did);
    const writing = store.set(did, next);
    try {
      // Kill the backend serving the write while it waits for the lock.
      const pids = await waitFor(async () => {
        const { rows } = await admin.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2 AND wait_event_type = 'Lock'`,
          [app, name],
        );
        return rows.length > 0 ? rows.map((r) => r.pid) : undefined;
      });
      for (const pid of pids) await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    } finally {
      await lock.release();
    }
    await writing;

    expect(failures.length).toBeGreaterThanOrEqual(1);
    // 57P01 admin_shutdown ("terminating connection due to administrator command"), or the
    // driver's "Connection terminated" when the socket closes first.
    expect(
      failures.some(
        (f) => driverError(f).code === '57P01' || /terminat/i.test(String(driverError(f).message)),
      ),
    ).toBe(true);
    expect(await store.get(did)).toEqual(next);
  });

  it('reconnects when its idle pooled connections were killed right before a write', async () => {
    const app = `atp-idle-${randomBytes(4).toString('hex')}`;
    const ds = await dataSource(app);
    const { failures, retry } = observe();
    const sessions = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS, retry });
    const states = new TypeOrmStateStore(ds, { ttlMs: TTL_MS, retry });
    const did = randomDid();
    await sessions.set(did, sessionValue(did));

    const { rows } = await admin.query<{ n: string }>(
      `SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = $1 AND datname = $2`,
      [app, name],
    );
    expect(Number(rows[0]!.n)).toBeGreaterThanOrEqual(1);
    const next = sessionValue(did);
    const state = stateValue();
    await Promise.all([sessions.set(did, next), states.set('idle-kill-state', state)]);

    // Whether a write raced the dying connection (and was retried) depends on timing; any
    // failure seen must have been a transient one, and both writes must have landed.
    for (const f of failures) expect(isTransientDatabaseError(f)).toBe(true);
    expect(await sessions.get(did)).toEqual(next);
    expect(await states.get('idle-kill-state')).toEqual(state);
  });
});

describe('transient failures on MariaDB', () => {
  let drop: () => Promise<void>;
  let ds: DataSource;
  let base: DataSourceOptions & { database: string };

  beforeAll(async () => {
    const db = await createTestDatabase('mariadb', 'transient_retry');
    drop = db.drop;
    base = db.options as typeof base;
    await migrated(base);
    // mysql2 has no "run this on connect" option, and a SET issued through the DataSource
    // reaches only the pooled connection that runs it. Handing TypeORM a mysql2 whose pools
    // queue the SET on every new connection (before the pool hands it out) covers them all.
    const createPool = (config: mysql2.PoolOptions) => {
      const pool = mysql2.createPool(config);
      pool.on('connection', (connection) => {
        connection.query('SET SESSION innodb_lock_wait_timeout = 1', () => undefined);
      });
      return pool;
    };
    ds = new DataSource({
      ...base,
      entities: [...atProtoEntities],
      driver: { ...mysql2, createPool },
      poolSize: 3,
    } as DataSourceOptions);
    await ds.initialize();
  });

  afterAll(async () => {
    await ds?.destroy();
    await drop?.();
  });

  it('retries ER_LOCK_WAIT_TIMEOUT while another transaction holds the row, then stores the new value', async () => {
    // Every pooled connection has the 1 s lock wait (checked on all of them at once).
    const settings = await Promise.all(
      [1, 2, 3].map(() =>
        ds.query('SELECT @@SESSION.innodb_lock_wait_timeout AS t, SLEEP(0.1) AS s'),
      ),
    );
    expect(settings.map((r: Array<{ t: unknown }>) => Number(r[0]!.t))).toEqual([1, 1, 1]);

    const { failures, retry } = observe();
    const store = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS, retry });
    const did = randomDid();
    await store.set(did, sessionValue(did));

    const locker = await mysqlPromise.createConnection({
      host: '127.0.0.1',
      port: 3306,
      user: 'root',
      database: base.database,
    });
    try {
      await locker.query('BEGIN');
      await locker.query('SELECT did FROM atproto_oauth_session WHERE did = ? FOR UPDATE', [did]);
      const releasing = sleep(1500).then(() => locker.query('COMMIT'));
      const next = sessionValue(did);
      try {
        await store.set(did, next);
      } finally {
        await releasing;
      }
      expect(failures.length).toBeGreaterThanOrEqual(1);
      for (const f of failures) expect(driverError(f).errno).toBe(1205); // ER_LOCK_WAIT_TIMEOUT
      expect(await store.get(did)).toEqual(next);
    } finally {
      await locker.end();
    }
  });
});

describe('transient failures on SQLite', () => {
  let drop: () => Promise<void>;
  let ds: DataSource;
  let file: string;

  beforeAll(async () => {
    const db = await createTestDatabase('sqlite', 'transient_retry');
    drop = db.drop;
    file = db.options.database as string;
    await migrated(db.options);
    // A 50 ms busy timeout: a write that finds the file locked fails fast with SQLITE_BUSY.
    ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      timeout: 50,
    } as DataSourceOptions);
    await ds.initialize();
  });

  afterAll(async () => {
    await ds?.destroy();
    await drop?.();
  });

  it('retries SQLITE_BUSY while another connection holds an exclusive lock, then stores the new value', async () => {
    const { failures, retry } = observe();
    const store = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS, retry });
    const did = randomDid();
    await store.set(did, sessionValue(did));

    const locker = new Database(file);
    try {
      locker.exec('BEGIN EXCLUSIVE');
      const releasing = sleep(300).then(() => locker.exec('COMMIT'));
      const next = sessionValue(did);
      try {
        await store.set(did, next);
      } finally {
        await releasing;
      }
      expect(failures.length).toBeGreaterThanOrEqual(1);
      for (const f of failures) expect(String(driverError(f).code)).toMatch(/^SQLITE_BUSY/);
      expect(await store.get(did)).toEqual(next);
    } finally {
      locker.close();
    }
  });
});

describe.each(DIALECTS)('non-transient failures on %s', (dialect) => {
  let drop: () => Promise<void>;
  let ds: DataSource;

  beforeAll(async () => {
    // No migrations: the tables do not exist.
    const db = await createTestDatabase(dialect, 'non_transient');
    drop = db.drop;
    ds = new DataSource({ ...db.options, entities: [...atProtoEntities] });
    await ds.initialize();
  });

  afterAll(async () => {
    await ds?.destroy();
    await drop?.();
  });

  it('escapes at once, without a retry: a missing table', async () => {
    const { failures, retry } = observe();
    const store = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS, retry });
    const did = randomDid();
    await expect(store.set(did, sessionValue(did))).rejects.toMatchObject(QUERY_FAILED);
    expect(failures).toEqual([]);
  });

  it('escapes at once, without a retry: a value that belongs to another DID', async () => {
    const { failures, retry } = observe();
    const store = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS, retry });
    const error = await store.set(randomDid(), sessionValue(randomDid())).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoStoreError);
    expect((error as Error).message).toMatch(/another DID/);
    expect(failures).toEqual([]);
  });
});

/** Polls `probe` until it returns a value (10 s at most). */
async function waitFor<T>(probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error('timed out waiting for the condition');
    await sleep(20);
  }
}
