import { atProtoMigrations } from 'nestjs-atproto-auth';
import { useDataSource } from '../support/data-source-hook.js';
import { DIALECTS } from '../support/databases.js';
import {
  expectRollsBackAlone,
  pendingSchemaQueries,
  unmigratedDataSource,
} from '../support/migration-check.js';

const NATIVE_TABLES = ['atproto_native_code', 'atproto_native_refresh_family'];

describe.each(DIALECTS)('the native migration on %s', (dialect) => {
  const ds = useDataSource(() => unmigratedDataSource(dialect, 'native_migration'));

  it('is listed by atProtoMigrations() after the first one, and its schema matches the entities', async () => {
    const names = atProtoMigrations().map((m) => new m().name);
    expect(names).toContain('AtProtoNative1795857600000');
    expect(names.indexOf('AtProtoNative1795857600000')).toBeGreaterThan(
      names.indexOf('AtProtoInit1763800000000'),
    );
    const ran = await ds().runMigrations({ transaction: 'each' });
    expect(ran.map((m) => m.name)).toContain('AtProtoNative1795857600000');
    expect(await pendingSchemaQueries(ds())).toEqual([]);
    const tables = await ds().createQueryRunner().getTables(NATIVE_TABLES);
    expect(tables.map((t) => t.name).sort()).toEqual(NATIVE_TABLES);
  });

  it('rolls back its own tables only', async () => {
    await expectRollsBackAlone(ds(), {
      migration: 'AtProtoNative1795857600000',
      tables: NATIVE_TABLES,
      kept: ['atproto_app_session'],
    });
  });
});
