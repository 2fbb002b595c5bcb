import type { MigrationInterface } from 'typeorm';
import { AtProtoInit1763800000000 } from './1763800000000-at-proto-init.js';
import { AtProtoApiKeys1795857400000 } from './1795857400000-at-proto-api-keys.js';
import { AtProtoNative1795857600000 } from './1795857600000-at-proto-native.js';
import { AtProtoBotSessions1795857900000 } from './1795857900000-at-proto-bot-sessions.js';

export { AtProtoInit1763800000000 };

/**
 * The migrations that create and evolve this library's tables, in order. Each one picks
 * the SQL of the DataSource that runs it (SQLite via better-sqlite3, PostgreSQL,
 * MySQL/MariaDB), so the same call works whatever database you use.
 *
 * @example
 * new DataSource({ ..., entities: [...atProtoEntities], migrations: [...atProtoMigrations()] })
 * @publicApi
 */
export function atProtoMigrations(): Array<new () => MigrationInterface> {
  return [
    AtProtoInit1763800000000,
    AtProtoApiKeys1795857400000,
    AtProtoNative1795857600000,
    AtProtoBotSessions1795857900000,
  ];
}
