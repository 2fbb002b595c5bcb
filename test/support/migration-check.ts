import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { openOnTestDatabase } from './data-source-hook.js';
import { createTestDatabase, type Dialect } from './databases.js';

// Helpers for the migration tests: a fresh database on which no migration has run yet, what
// `migration:generate` would still add, and the check that one migration rolls back alone.

/**
 * A fresh database of its own (see {@link createTestDatabase}) behind an initialized DataSource
 * that knows this library's entities and shipped migrations but has run none of them. `close`
 * destroys the DataSource and drops the database.
 *
 * @internal
 */
export async function unmigratedDataSource(
  dialect: Dialect,
  label: string,
): Promise<{ dataSource: DataSource; close: () => Promise<void> }> {
  const db = await createTestDatabase(dialect, label);
  const dataSource = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
  });
  return openOnTestDatabase(dataSource, db.drop);
}

/**
 * The statements `migration:generate` would write for `ds` now (what the schema lacks to match
 * the entities), only those that mention `table` when it is given.
 *
 * @internal
 */
export async function pendingSchemaQueries(ds: DataSource, table?: string): Promise<string[]> {
  const pending = await ds.driver.createSchemaBuilder().log();
  const queries = pending.upQueries.map((x) => x.query);
  return table === undefined ? queries : queries.filter((sql) => sql.includes(table));
}

/**
 * Checks that the shipped migration named `migration` rolls back alone on `ds`, where every
 * shipped migration has run: the migrations after it are undone first, then undoing it removes
 * its `tables` and leaves the earlier migrations' `kept` tables; running the migrations again
 * starts with it and brings its tables back.
 *
 * @internal
 */
export async function expectRollsBackAlone(
  ds: DataSource,
  check: { migration: string; tables: readonly string[]; kept: readonly string[] },
): Promise<void> {
  const names = atProtoMigrations().map((m) => new m().name);
  expect(names).toContain(check.migration);
  const later = names.slice(names.indexOf(check.migration) + 1);
  for (let i = 0; i < later.length; i++) await ds.undoLastMigration({ transaction: 'each' });
  const runner = ds.createQueryRunner();
  // The names of those of `tables` that exist, sorted.
  const existing = async (tables: readonly string[]) =>
    (await runner.getTables([...tables])).map((t) => t.name).sort();
  try {
    expect(await existing(check.tables)).toEqual([...check.tables].sort());
    await ds.undoLastMigration({ transaction: 'each' });
    expect(await existing(check.tables)).toEqual([]);
    expect(await existing(check.kept)).toEqual([...check.kept].sort());
    expect((await ds.runMigrations()).map((m) => m.name)[0]).toBe(check.migration);
    expect(await existing(check.tables)).toEqual([...check.tables].sort());
  } finally {
    await runner.release();
  }
}
