import type { MigrationInterface, QueryRunner } from 'typeorm';
import { familyOfRunner, type SqlFamily } from './dialect.js';

// One class for every supported database, like the first migration: it reads the dialect of
// the DataSource that runs it. The SQL is what TypeORM generates from the entity, with the
// same deliberate addition on MySQL/MariaDB: the key and DID columns (and the other ASCII
// ones) are `ascii` with the binary `ascii_bin` collation, since the default collations there
// compare case-insensitively; `name` is `utf8mb4`, so any name a user types fits whatever
// the database's default character set is.
const UP: Record<SqlFamily, string[]> = {
  sqlite: [
    `CREATE TABLE "atproto_api_key" ("id" varchar(64) PRIMARY KEY NOT NULL, "did" varchar(512) NOT NULL, "name" varchar(100) NOT NULL, "display_prefix" varchar(32) NOT NULL, "scopes" varchar(2048), "created_at" bigint NOT NULL, "expires_at" bigint, "revoked_at" bigint, "last_used_at" bigint)`,
    `CREATE INDEX "IDX_atproto_api_key_did" ON "atproto_api_key" ("did")`,
    `CREATE INDEX "IDX_atproto_api_key_expires_at" ON "atproto_api_key" ("expires_at")`,
    `CREATE INDEX "IDX_atproto_api_key_revoked_at" ON "atproto_api_key" ("revoked_at")`,
  ],
  postgres: [
    `CREATE TABLE "atproto_api_key" ("id" character varying(64) NOT NULL, "did" character varying(512) NOT NULL, "name" character varying(100) NOT NULL, "display_prefix" character varying(32) NOT NULL, "scopes" character varying(2048), "created_at" bigint NOT NULL, "expires_at" bigint, "revoked_at" bigint, "last_used_at" bigint, CONSTRAINT "PK_atproto_api_key" PRIMARY KEY ("id"))`,
    `CREATE INDEX "IDX_atproto_api_key_did" ON "atproto_api_key" ("did")`,
    `CREATE INDEX "IDX_atproto_api_key_expires_at" ON "atproto_api_key" ("expires_at")`,
    `CREATE INDEX "IDX_atproto_api_key_revoked_at" ON "atproto_api_key" ("revoked_at")`,
  ],
  mysql: [
    'CREATE TABLE `atproto_api_key` (`id` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `did` varchar(512) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `name` varchar(100) CHARACTER SET utf8mb4 NOT NULL, `display_prefix` varchar(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `scopes` varchar(2048) CHARACTER SET ascii COLLATE ascii_bin NULL, `created_at` bigint NOT NULL, `expires_at` bigint NULL, `revoked_at` bigint NULL, `last_used_at` bigint NULL, INDEX `IDX_atproto_api_key_did` (`did`), INDEX `IDX_atproto_api_key_expires_at` (`expires_at`), INDEX `IDX_atproto_api_key_revoked_at` (`revoked_at`), PRIMARY KEY (`id`)) ENGINE=InnoDB',
  ],
};

const DOWN: Record<SqlFamily, string[]> = {
  sqlite: [`DROP TABLE "atproto_api_key"`],
  postgres: [`DROP TABLE "atproto_api_key"`],
  mysql: ['DROP TABLE `atproto_api_key`'],
};

/**
 * Creates the API key table (`atproto_api_key`) with its indexes.
 * @publicApi
 */
export class AtProtoApiKeys1795857400000 implements MigrationInterface {
  name = 'AtProtoApiKeys1795857400000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const sql of UP[familyOfRunner(queryRunner)]) await queryRunner.query(sql);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const sql of DOWN[familyOfRunner(queryRunner)]) await queryRunner.query(sql);
  }
}
