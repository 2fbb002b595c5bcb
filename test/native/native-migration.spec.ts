import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { AtProtoNative1795857600000 } from '../../lib/storage/migrations/1795857600000-at-proto-native.js';
import { createTestDatabase, DIALECTS } from '../support/databases.js';

const NATIVE_TABLES = ['atproto_native_code', 'atproto_native_refresh_family'];

describe.each(DIALECTS)('the native migration on %s', (dialect) => {
  let ds: DataSource;
  let drop: () => Promise<void>;

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'native_migration');
    drop = db.drop;
    ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
    });
    await ds.initialize();
  });

  afterAll(async () => {
    await ds?.destroy();
    await drop?.();
  });

  it('is listed by atProtoMigrations() after the first one, and its schema matches the entities', async () => {
    const names = atProtoMigrations().map((m) => new m().name);
    expect(names).toContain('AtProtoNative1795857600000');
    expect(names.indexOf('AtProtoNative1795857600000')).toBeGreaterThan(
      names.indexOf('AtProtoInit1763800000000'),
    );
    const ran = await ds.runMigrations({ transaction: 'each' });
    expect(ran.map((m) => m.name)).toContain('AtProtoNative1795857600000');
    const pending = await ds.driver.createSchemaBuilder().log();
    expect(pending.upQueries.map((q) => q.query)).toEqual([]);
    const tables = await ds.createQueryRunner().getTables(NATIVE_TABLES);
    expect(tables.map((t) => t.name).sort()).toEqual(NATIVE_TABLES);
  });

  it('rolls back its own tables only', async () => {
    const runner = ds.createQueryRunner();
    try {
      await new AtProtoNative1795857600000().down(runner);
      expect(await runner.getTables(NATIVE_TABLES)).toHaveLength(0);
      expect(await runner.getTables(['atproto_app_session'])).toHaveLength(1);
      await new AtProtoNative1795857600000().up(runner);
      expect(await runner.getTables(NATIVE_TABLES)).toHaveLength(2);
    } finally {
      await runner.release();
    }
  });
});
