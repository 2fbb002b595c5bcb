/**
 * What a database dump, a backup or a read-only SQL user sees must not contain a usable API
 * key: only its SHA-256 and its display prefix (the configured prefix and 8 of its 32 random
 * characters) are stored. Checked on SQLite (the file's bytes too), PostgreSQL and MariaDB,
 * with the key in clear and in every encoding it could be stored in; and no log line names it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { AtProtoApiKeyService } from '../../lib/api-keys/api-key.service.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import { TypeOrmApiKeyStore } from '../../lib/storage/typeorm/typeorm-api-key.store.js';
import { createTestDatabase, type Dialect, DIALECTS } from '../support/databases.js';
import { q, randomDid } from '../support/raw-sql.js';
import { encodings, leaks, type Needle } from '../support/secret-needles.js';

const PREFIX = 'acme_';
const options = {
  appSession: { cacheTtlMs: 2000 },
  apiKeys: { prefix: PREFIX, lastUsedIntervalMs: 300_000, revokedGraceMs: 86_400_000 },
} as unknown as ResolvedAtProtoOptions;

/** The key, its body without the prefix, and the part the display prefix does not show. */
function needlesOf(key: string): Needle[] {
  return [
    ...encodings('API key', key),
    ...encodings('key body', key.slice(PREFIX.length)),
    ...encodings('key tail not shown in the display prefix', key.slice(PREFIX.length + 8)),
  ];
}

describe.each(DIALECTS)('API keys at rest on %s', (dialect) => {
  let ds: DataSource;
  let drop: () => Promise<void>;
  let sqliteFile: string | undefined;

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'api_keys_at_rest');
    drop = db.drop;
    sqliteFile = db.options.type === 'better-sqlite3' ? (db.options.database as string) : undefined;
    ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
    });
    await ds.initialize();
  });
  afterAll(async () => {
    jest.restoreAllMocks();
    await ds?.destroy();
    await drop?.();
  });

  it('stores no key in any table, in clear or encoded, and logs none', async () => {
    const logged: string[] = [];
    for (const level of ['log', 'warn', 'error', 'debug', 'verbose', 'fatal'] as const) {
      jest.spyOn(Logger.prototype, level).mockImplementation((...args: unknown[]) => {
        logged.push(args.map(String).join(' '));
      });
    }
    const service = new AtProtoApiKeyService(options, new TypeOrmApiKeyStore(ds));
    const did = randomDid();
    const created = [];
    for (let i = 0; i < 3; i++) {
      created.push(await service.create(did, { name: `bot ${i}`, scopes: ['feed:read'] }));
    }
    // Used (last_used_at written), one revoked: every column the table has holds a value.
    for (const { key } of created) expect(await service.validate(key)).toBeDefined();
    const store = new TypeOrmApiKeyStore(ds);
    for (const { info } of created) {
      // The last-use write is not awaited by validate: wait until it is there.
      for (let i = 0; i < 200 && !(await store.get(info.id))?.lastUsedAt; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect((await store.get(info.id))?.lastUsedAt).not.toBeNull();
    }
    expect(await service.revoke(created[2]!.info.id, { did })).toBe(true);
    await service.list(did);

    const needles = created.flatMap(({ key }) => needlesOf(key));
    const dump = await dumpAllTables(ds, dialect);
    // The dump covers the rows just written (else the check below proves nothing).
    for (const { info } of created) {
      expect(dump).toContain(info.id);
      expect(dump).toContain(info.displayPrefix);
    }
    expect(dump).toContain('atproto_api_key');
    expect(leaks(dump, needles)).toEqual([]);
    expect(leaks(logged.join('\n'), needles)).toEqual([]);

    if (sqliteFile) {
      // SQLite: the bytes on disk, free pages and any journal included.
      for (const file of [sqliteFile, `${sqliteFile}-journal`, `${sqliteFile}-wal`]) {
        if (!existsSync(file)) continue;
        const asText = readFileSync(file).toString('latin1');
        if (file === sqliteFile) expect(asText).toContain(created[0]!.info.id);
        expect(leaks(asText, needles)).toEqual([]);
      }
    }
  });
});

/**
 * Every row of every table of the test database, twice: as the driver returns `SELECT *`,
 * and with each column cast to text in SQL (as a dump prints it).
 */
async function dumpAllTables(ds: DataSource, dialect: Dialect): Promise<string> {
  const tables = (
    (await ds.query(
      dialect === 'sqlite'
        ? `SELECT name AS name FROM sqlite_master WHERE type = 'table'`
        : dialect === 'postgres'
          ? `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'`
          : `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE()`,
    )) as Array<{ name: string }>
  ).map((t) => t.name);
  expect(tables).toContain('atproto_api_key');
  const text = dialect === 'mariadb' ? 'CHAR' : 'TEXT';
  const parts: string[] = [];
  for (const table of tables) {
    const rows: Array<Record<string, unknown>> = await ds.query(
      `SELECT * FROM ${q(dialect, table)}`,
    );
    parts.push(`-- ${table}`, JSON.stringify(rows));
    if (rows.length === 0) continue;
    const casts = Object.keys(rows[0]!).map(
      (c) => `CAST(${q(dialect, c)} AS ${text}) AS ${q(dialect, c)}`,
    );
    parts.push(
      JSON.stringify(await ds.query(`SELECT ${casts.join(', ')} FROM ${q(dialect, table)}`)),
    );
    if (dialect === 'postgres') {
      parts.push(
        JSON.stringify(await ds.query(`SELECT t::text AS row FROM ${q(dialect, table)} t`)),
      );
    }
  }
  return parts.join('\n');
}
