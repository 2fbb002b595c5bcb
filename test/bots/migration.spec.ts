/**
 * The bot-session migration on SQLite, PostgreSQL and MariaDB: it runs after the earlier
 * ones, leaves nothing for `migration:generate` to add, compares DIDs byte for byte, and
 * rolls back alone (the earlier tables stay).
 */
import { useDataSource } from '../support/data-source-hook.js';
import { DIALECTS } from '../support/databases.js';
import {
  expectRollsBackAlone,
  pendingSchemaQueries,
  unmigratedDataSource,
} from '../support/migration-check.js';
import { p, q } from '../support/raw-sql.js';

const NAME = 'AtProtoBotSessions1795857900000';

describe.each(DIALECTS)('bot-session migration on %s', (dialect) => {
  const ds = useDataSource(() => unmigratedDataSource(dialect, 'bot_migration'));
  const t = (id: string) => q(dialect, id);

  it('runs after the earlier migrations and matches the entity (migration:generate finds nothing)', async () => {
    const ran = await ds().runMigrations({ transaction: 'each' });
    const names = ran.map((m) => m.name);
    expect(names).toContain(NAME);
    expect(names.indexOf(NAME)).toBeGreaterThan(names.indexOf('AtProtoNative1795857600000'));
    expect(await pendingSchemaQueries(ds(), 'atproto_bot_session')).toEqual([]);
  });

  it('compares DIDs byte for byte (DIDs differing only in case are distinct rows)', async () => {
    const insert = (did: string) =>
      ds().query(
        `INSERT INTO ${t('atproto_bot_session')} (${t('did')}, ${t('handle')}, ${t('pds_url')}, ${t('token_set')}, ${t('expires_at')}, ${t('created_at')}, ${t('updated_at')}, ${t('version')}) VALUES (${p(dialect, 1)}, ${p(dialect, 2)}, ${p(dialect, 3)}, ${p(dialect, 4)}, ${p(dialect, 5)}, ${p(dialect, 6)}, ${p(dialect, 7)}, ${p(dialect, 8)})`,
        [did, 'bot.test', 'https://pds.example', '"x"', 1, 1, 1, 1],
      );
    await insert('did:web:Bot.example');
    await insert('did:web:bot.example');
    const rows: unknown[] = await ds().query(
      `SELECT * FROM ${t('atproto_bot_session')} WHERE ${t('did')} = ${p(dialect, 1)}`,
      ['did:web:bot.example'],
    );
    expect(rows).toHaveLength(1);
  });

  it('rolls back alone: the bot-session table goes, the earlier tables stay; and runs again', async () => {
    await expectRollsBackAlone(ds(), {
      migration: NAME,
      tables: ['atproto_bot_session'],
      kept: ['atproto_oauth_session', 'atproto_api_key', 'atproto_native_refresh_family'],
    });
  });
});
