import { atProtoMigrations } from 'nestjs-atproto-auth';
import { useDataSource } from '../support/data-source-hook.js';
import { DIALECTS } from '../support/databases.js';
import { pendingSchemaQueries, unmigratedDataSource } from '../support/migration-check.js';
import { p, q } from '../support/raw-sql.js';

describe.each(DIALECTS)('shipped migrations on %s', (dialect) => {
  const ds = useDataSource(() => unmigratedDataSource(dialect, 'migrations'));

  it('create a schema that matches the entities (migration:generate finds nothing)', async () => {
    const ran = await ds().runMigrations({ transaction: 'each' });
    // Every shipped migration, in order (each new table comes with a migration of its own).
    expect(ran.map((m) => m.name)).toEqual(atProtoMigrations().map((M) => M.name));
    expect(ran[0]?.name).toBe('AtProtoInit1763800000000');
    expect(await pendingSchemaQueries(ds())).toEqual([]);
  });

  it('compare key columns byte for byte (keys differing only in case are distinct)', async () => {
    const now = Date.now();
    for (const key of ['AbC', 'abc']) {
      await ds().query(
        `INSERT INTO ${q(dialect, 'atproto_oauth_state')} (${q(dialect, 'key')}, ${q(dialect, 'data')}, ${q(dialect, 'created_at')}, ${q(dialect, 'expires_at')}) VALUES (${p(dialect, 1)}, ${p(dialect, 2)}, ${p(dialect, 3)}, ${p(dialect, 4)})`,
        [key, '"x"', now, now],
      );
    }
    for (const did of ['did:web:Example.com', 'did:web:example.com']) {
      await ds().query(
        `INSERT INTO ${q(dialect, 'atproto_app_session')} (${q(dialect, 'id')}, ${q(dialect, 'did')}, ${q(dialect, 'created_at')}, ${q(dialect, 'expires_at')}, ${q(dialect, 'last_seen_at')}) VALUES (${p(dialect, 1)}, ${p(dialect, 2)}, ${p(dialect, 3)}, ${p(dialect, 4)}, ${p(dialect, 5)})`,
        [did === 'did:web:example.com' ? 'id-lower' : 'id-upper', did, now, now, now],
      );
    }
    const rows: Array<{ key: string }> = await ds().query(
      `SELECT ${q(dialect, 'key')} AS ${q(dialect, 'key')} FROM ${q(dialect, 'atproto_oauth_state')} WHERE ${q(dialect, 'key')} = ${p(dialect, 1)}`,
      ['abc'],
    );
    expect(rows.map((r) => r.key)).toEqual(['abc']);
    const byDid: unknown[] = await ds().query(
      `SELECT * FROM ${q(dialect, 'atproto_app_session')} WHERE ${q(dialect, 'did')} = ${p(dialect, 1)}`,
      ['did:web:example.com'],
    );
    expect(byDid).toHaveLength(1);
  });

  it('roll back cleanly', async () => {
    for (let i = 0; i < atProtoMigrations().length; i++) {
      await ds().undoLastMigration({ transaction: 'each' });
    }
    const runner = ds().createQueryRunner();
    try {
      const tables = await runner.getTables(ds().entityMetadatas.map((m) => m.tableName));
      expect(tables).toHaveLength(0);
    } finally {
      await runner.release();
    }
  });
});
