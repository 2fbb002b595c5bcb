import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource, type DataSourceOptions, type Logger } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { openOnTestDatabase } from './data-source-hook.js';

/** The three databases every storage test runs on. */
export type Dialect = 'sqlite' | 'postgres' | 'mariadb';
export const DIALECTS: readonly Dialect[] = ['sqlite', 'postgres', 'mariadb'];

const PG = { host: '127.0.0.1', port: 5432, username: 'postgres', password: '' };
const MARIA = { host: '127.0.0.1', port: 3306, username: 'root', password: '' };

/**
 * A fresh, empty database of its own for one test file, so that test files never see
 * each other's rows. Returns DataSource options for it and a function that drops it.
 */
export async function createTestDatabase(
  dialect: Dialect,
  label: string,
): Promise<{ options: DataSourceOptions; drop: () => Promise<void>; name: string }> {
  const name = `atp_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${randomBytes(3).toString('hex')}`;
  if (dialect === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'atp-sqlite-'));
    return {
      name,
      options: { type: 'better-sqlite3', database: join(dir, `${name}.sqlite`) },
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const admin = new DataSource(
    dialect === 'postgres'
      ? { type: 'postgres', ...PG, database: 'test' }
      : { type: 'mariadb', ...MARIA, database: 'test' },
  );
  await admin.initialize();
  try {
    await admin.query(
      dialect === 'postgres' ? `CREATE DATABASE "${name}"` : `CREATE DATABASE \`${name}\``,
    );
  } finally {
    await admin.destroy();
  }
  const options: DataSourceOptions =
    dialect === 'postgres'
      ? { type: 'postgres', ...PG, database: name }
      : { type: 'mariadb', ...MARIA, database: name };
  return {
    name,
    options,
    drop: async () => {
      const a = new DataSource(
        dialect === 'postgres'
          ? { type: 'postgres', ...PG, database: 'test' }
          : { type: 'mariadb', ...MARIA, database: 'test' },
      );
      await a.initialize();
      try {
        await a.query(
          dialect === 'postgres'
            ? `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`
            : `DROP DATABASE IF EXISTS \`${name}\``,
        );
      } finally {
        await a.destroy();
      }
    },
  };
}

/**
 * A fresh database of its own (see {@link createTestDatabase}) with this library's entities
 * and every shipped migration run, behind an initialized DataSource. `options` are the bare
 * connection options of that database, for more DataSources on it; `close` destroys the
 * DataSource and drops the database.
 *
 * @internal
 */
export async function migratedDataSource(
  dialect: Dialect,
  label: string,
  extra: { logger?: Logger } = {},
): Promise<{ dataSource: DataSource; options: DataSourceOptions; close: () => Promise<void> }> {
  const db = await createTestDatabase(dialect, label);
  const dataSource = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
    migrationsRun: true,
    ...extra,
  });
  return { ...(await openOnTestDatabase(dataSource, db.drop)), options: db.options };
}

/**
 * A primary and a "replica" for TypeORM's `replication` option: two fresh databases, both
 * migrated, the replica left empty. A read that goes to the replica finds nothing, which
 * is what a lagging replica answers for a row written a moment before. The returned
 * options carry `replication` (master = primary, slaves = [replica]) and the entities and
 * migrations of this library.
 */
export async function createReplicatedTestDatabases(
  dialect: Exclude<Dialect, 'sqlite'>,
  label: string,
): Promise<{ options: DataSourceOptions; primary: DataSourceOptions; drop: () => Promise<void> }> {
  const primary = await createTestDatabase(dialect, `${label}_primary`);
  const replica = await createTestDatabase(dialect, `${label}_replica`);
  for (const db of [primary, replica]) {
    const ds = new DataSource({
      ...db.options,
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
  const credentials = (name: string) => ({
    ...(dialect === 'postgres' ? PG : MARIA),
    database: name,
  });
  const options = {
    type: dialect,
    replication: { master: credentials(primary.name), slaves: [credentials(replica.name)] },
    entities: [...atProtoEntities],
  } as DataSourceOptions;
  return {
    options,
    primary: primary.options,
    drop: async () => {
      await primary.drop();
      await replica.drop();
    },
  };
}
