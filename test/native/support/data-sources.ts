import { DataSource, type DataSourceOptions } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { createTestDatabase, type Dialect } from '../../support/databases.js';

/**
 * A fresh database of `dialect`, migrated with every shipped migration, and two DataSources
 * on it: two app instances sharing one database. `close` destroys both and drops it.
 */
export async function twoInstancesOn(
  dialect: Dialect,
  label: string,
): Promise<{
  first: DataSource;
  second: DataSource;
  options: DataSourceOptions;
  close: () => Promise<void>;
}> {
  const db = await createTestDatabase(dialect, label);
  const first = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
    migrationsRun: true,
  });
  await first.initialize();
  const second = new DataSource({ ...db.options, entities: [...atProtoEntities] });
  await second.initialize();
  return {
    first,
    second,
    options: db.options,
    close: async () => {
      await second.destroy();
      await first.destroy();
      await db.drop();
    },
  };
}
