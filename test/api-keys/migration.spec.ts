/**
 * The API key migration on SQLite, PostgreSQL and MariaDB: it runs after the first one,
 * leaves nothing for `migration:generate` to add, compares ids and DIDs byte for byte,
 * and rolls back alone (the first migration's tables stay).
 */
import { randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { TypeOrmApiKeyStore } from '../../lib/storage/typeorm/typeorm-api-key.store.js';
import { useDataSource } from '../support/data-source-hook.js';
import { DIALECTS } from '../support/databases.js';
import {
  expectRollsBackAlone,
  pendingSchemaQueries,
  unmigratedDataSource,
} from '../support/migration-check.js';
import { p, q, randomDid } from '../support/raw-sql.js';

describe.each(DIALECTS)('API key migration on %s', (dialect) => {
  const ds = useDataSource(() => unmigratedDataSource(dialect, 'api_key_migration'));
  const t = (id: string) => q(dialect, id);

  it('runs after the first migration and matches the entity (migration:generate finds nothing)', async () => {
    const ran = await ds().runMigrations({ transaction: 'each' });
    expect(ran.map((m) => m.name).slice(0, 2)).toEqual([
      'AtProtoInit1763800000000',
      'AtProtoApiKeys1795857400000',
    ]);
    expect(await pendingSchemaQueries(ds(), 'atproto_api_key')).toEqual([]);
  });

  it('compares ids and DIDs byte for byte (values differing only in case are distinct)', async () => {
    const now = Date.now();
    const insert = (id: string, did: string) =>
      ds().query(
        `INSERT INTO ${t('atproto_api_key')} (${t('id')}, ${t('did')}, ${t('name')}, ${t('display_prefix')}, ${t('created_at')}) VALUES (${p(dialect, 1)}, ${p(dialect, 2)}, ${p(dialect, 3)}, ${p(dialect, 4)}, ${p(dialect, 5)})`,
        [id, did, 'n', 'atp_x', now],
      );
    await insert('abc', 'did:web:Example.com');
    await insert('ABC', 'did:web:example.com');
    const byId: unknown[] = await ds().query(
      `SELECT * FROM ${t('atproto_api_key')} WHERE ${t('id')} = ${p(dialect, 1)}`,
      ['abc'],
    );
    expect(byId).toHaveLength(1);
    const byDid: unknown[] = await ds().query(
      `SELECT * FROM ${t('atproto_api_key')} WHERE ${t('did')} = ${p(dialect, 1)}`,
      ['did:web:example.com'],
    );
    expect(byDid).toHaveLength(1);
  });

  it('rolls back alone: the API key table goes, the first migration’s tables stay', async () => {
    await expectRollsBackAlone(ds(), {
      migration: 'AtProtoApiKeys1795857400000',
      tables: ['atproto_api_key'],
      kept: ['atproto_oauth_state', 'atproto_oauth_session', 'atproto_app_session'],
    });
  });
});

describe('API key migration on a MariaDB database whose default character set is latin1', () => {
  const name = `atp_api_key_latin1_${randomBytes(3).toString('hex')}`;
  const server = { host: '127.0.0.1', port: 3306, username: 'root', password: '' };
  let ds: DataSource;

  beforeAll(async () => {
    const admin = new DataSource({ type: 'mariadb', ...server, database: 'test' });
    await admin.initialize();
    await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET latin1`);
    await admin.destroy();
    ds = new DataSource({
      type: 'mariadb',
      ...server,
      database: name,
      charset: 'utf8mb4',
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
    });
    await ds.initialize();
  });
  afterAll(async () => {
    await ds?.query(`DROP DATABASE IF EXISTS \`${name}\``);
    await ds?.destroy();
  });

  it('keeps any name a user types (the name column is utf8mb4)', async () => {
    const store = new TypeOrmApiKeyStore(ds);
    const record = {
      id: randomBytes(32).toString('hex'),
      did: randomDid(),
      name: 'Bötchen – 日本語 🤖',
      displayPrefix: 'atp_AbCd1234',
      scopes: ['feed:read'],
      createdAt: new Date(),
      expiresAt: null,
      revokedAt: null,
      lastUsedAt: null,
    };
    await store.create(record);
    expect(await store.get(record.id)).toEqual(record);
  });
});
