import type { MigrationInterface, QueryRunner } from 'typeorm';
import { familyOfRunner, type SqlFamily } from './dialect.js';

// Bot accounts' app-password sessions. As in the first migration, the SQL is what TypeORM
// generates from the entity, except on MySQL/MariaDB where the DID (compared byte for byte)
// is `ascii` with the binary `ascii_bin` collation: the default collations there compare
// case-insensitively.
const UP: Record<SqlFamily, string[]> = {
  sqlite: [
    `CREATE TABLE "atproto_bot_session" ("did" varchar(512) PRIMARY KEY NOT NULL, "handle" varchar(253) NOT NULL, "pds_url" varchar(2048) NOT NULL, "token_set" json NOT NULL, "access_expires_at" bigint, "expires_at" bigint NOT NULL, "created_at" bigint NOT NULL, "updated_at" bigint NOT NULL, "version" integer NOT NULL)`,
    `CREATE INDEX "IDX_atproto_bot_session_expires_at" ON "atproto_bot_session" ("expires_at")`,
  ],
  postgres: [
    `CREATE TABLE "atproto_bot_session" ("did" character varying(512) NOT NULL, "handle" character varying(253) NOT NULL, "pds_url" character varying(2048) NOT NULL, "token_set" json NOT NULL, "access_expires_at" bigint, "expires_at" bigint NOT NULL, "created_at" bigint NOT NULL, "updated_at" bigint NOT NULL, "version" integer NOT NULL, CONSTRAINT "PK_atproto_bot_session" PRIMARY KEY ("did"))`,
    `CREATE INDEX "IDX_atproto_bot_session_expires_at" ON "atproto_bot_session" ("expires_at")`,
  ],
  mysql: [
    'CREATE TABLE `atproto_bot_session` (`did` varchar(512) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `handle` varchar(253) NOT NULL, `pds_url` varchar(2048) NOT NULL, `token_set` json NOT NULL, `access_expires_at` bigint NULL, `expires_at` bigint NOT NULL, `created_at` bigint NOT NULL, `updated_at` bigint NOT NULL, `version` int NOT NULL, INDEX `IDX_atproto_bot_session_expires_at` (`expires_at`), PRIMARY KEY (`did`)) ENGINE=InnoDB',
  ],
};

const DOWN: Record<SqlFamily, string[]> = {
  sqlite: [`DROP TABLE "atproto_bot_session"`],
  postgres: [`DROP TABLE "atproto_bot_session"`],
  mysql: ['DROP TABLE `atproto_bot_session`'],
};

/**
 * Creates the table of bot accounts' app-password sessions (`atproto_bot_session`).
 * @publicApi
 */
export class AtProtoBotSessions1795857900000 implements MigrationInterface {
  name = 'AtProtoBotSessions1795857900000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const sql of UP[familyOfRunner(queryRunner)]) await queryRunner.query(sql);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const sql of DOWN[familyOfRunner(queryRunner)]) await queryRunner.query(sql);
  }
}
