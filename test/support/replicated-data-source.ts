import { DataSource } from 'typeorm';
import { openOnTestDatabase } from './data-source-hook.js';
import { createReplicatedTestDatabases, type Dialect } from './databases.js';

/** The dialects with a replica setup in the tests (SQLite has no `replication`). */
export const REPLICA_DIALECTS = ['postgres', 'mariadb'] as const satisfies readonly Dialect[];

/**
 * An initialized DataSource under TypeORM `replication` on a primary and a lagging "replica"
 * (see {@link createReplicatedTestDatabases}: both migrated, the replica left empty, so a read
 * that reaches it misses a row written a moment before). `close` destroys the DataSource and
 * drops both databases.
 *
 * @internal
 */
export async function replicatedDataSource(
  dialect: (typeof REPLICA_DIALECTS)[number],
  label: string,
): Promise<{ dataSource: DataSource; close: () => Promise<void> }> {
  const dbs = await createReplicatedTestDatabases(dialect, label);
  return openOnTestDatabase(new DataSource(dbs.options), dbs.drop);
}
