import { DataSource } from 'typeorm';
import { atProtoEntities } from '../../lib/storage/entities/index.js';
import { MemorySessionStore, MemoryStateStore } from '../../lib/storage/memory/memory.stores.js';
import { atProtoMigrations } from '../../lib/storage/migrations/index.js';
import { TypeOrmSessionStore } from '../../lib/storage/typeorm/typeorm-session.store.js';
import { TypeOrmStateStore } from '../../lib/storage/typeorm/typeorm-state.store.js';
import { defineStoreConformanceTests } from '../../lib/testing/index.js';
import { createTestDatabase, DIALECTS } from '../support/databases.js';
import { installTestKeyRing } from '../support/key-ring.js';

installTestKeyRing();

defineStoreConformanceTests({
  name: 'memory',
  createStateStore: (ctx) => new MemoryStateStore(ctx),
  createSessionStore: (ctx) => new MemorySessionStore(ctx),
  fencedWrites: true,
});

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

for (const dialect of DIALECTS) {
  let ds: Promise<DataSource> | undefined;
  const dataSource = () =>
    (ds ??= (async () => {
      const db = await createTestDatabase(dialect, 'conformance');
      const source = new DataSource({
        ...db.options,
        entities: [...atProtoEntities],
        migrations: atProtoMigrations(),
        migrationsRun: true,
      });
      await source.initialize();
      cleanups.push(async () => {
        await source.destroy();
        await db.drop();
      });
      return source;
    })());
  defineStoreConformanceTests({
    name: `typeorm on ${dialect}`,
    createStateStore: async (ctx) => new TypeOrmStateStore(await dataSource(), ctx),
    createSessionStore: async (ctx) => new TypeOrmSessionStore(await dataSource(), ctx),
    fencedWrites: true,
  });
}
