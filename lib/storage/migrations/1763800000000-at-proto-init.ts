import type { MigrationInterface, QueryRunner } from 'typeorm';
import { familyOfRunner, type SqlFamily } from './dialect.js';

// One migration class serves every supported database: it reads the dialect of the
// DataSource that runs it, so users list the same migrations whatever database they use.
// The SQL is what TypeORM generates from the entities, with one deliberate addition on
// MySQL/MariaDB: key columns are `ascii` with the binary `ascii_bin` collation, because the
// default collations there compare case-insensitively, while OAuth state keys (base64url)
// and DIDs are case-sensitive. PostgreSQL and SQLite compare bytes by default.
const UP: Record<SqlFamily, string[]> = {
  sqlite: [
    `CREATE TABLE "atproto_oauth_state" ("key" varchar(255) PRIMARY KEY NOT NULL, "data" json NOT NULL, "created_at" bigint NOT NULL, "expires_at" bigint NOT NULL)`,
    `CREATE INDEX "IDX_atproto_oauth_state_expires_at" ON "atproto_oauth_state" ("expires_at")`,
    `CREATE TABLE "atproto_oauth_session" ("did" varchar(512) PRIMARY KEY NOT NULL, "token_set" json NOT NULL, "dpop_key" json NOT NULL, "auth_method" varchar(255) NOT NULL, "issuer" varchar(2048) NOT NULL, "pds_url" varchar(2048) NOT NULL, "access_expires_at" bigint, "expires_at" bigint NOT NULL, "created_at" bigint NOT NULL, "updated_at" bigint NOT NULL, "version" integer NOT NULL)`,
    `CREATE INDEX "IDX_atproto_oauth_session_expires_at" ON "atproto_oauth_session" ("expires_at")`,
    `CREATE TABLE "atproto_app_session" ("id" varchar(64) PRIMARY KEY NOT NULL, "did" varchar(512) NOT NULL, "created_at" bigint NOT NULL, "expires_at" bigint NOT NULL, "last_seen_at" bigint NOT NULL, "revoked_at" bigint, "user_agent" varchar(512))`,
    `CREATE INDEX "IDX_atproto_app_session_did" ON "atproto_app_session" ("did")`,
    `CREATE INDEX "IDX_atproto_app_session_expires_at" ON "atproto_app_session" ("expires_at")`,
    `CREATE INDEX "IDX_atproto_app_session_last_seen_at" ON "atproto_app_session" ("last_seen_at")`,
    `CREATE INDEX "IDX_atproto_app_session_revoked_at" ON "atproto_app_session" ("revoked_at")`,
  ],
  postgres: [
    `CREATE TABLE "atproto_oauth_state" ("key" character varying(255) NOT NULL, "data" json NOT NULL, "created_at" bigint NOT NULL, "expires_at" bigint NOT NULL, CONSTRAINT "PK_atproto_oauth_state" PRIMARY KEY ("key"))`,
    `CREATE INDEX "IDX_atproto_oauth_state_expires_at" ON "atproto_oauth_state" ("expires_at")`,
    `CREATE TABLE "atproto_oauth_session" ("did" character varying(512) NOT NULL, "token_set" json NOT NULL, "dpop_key" json NOT NULL, "auth_method" character varying(255) NOT NULL, "issuer" character varying(2048) NOT NULL, "pds_url" character varying(2048) NOT NULL, "access_expires_at" bigint, "expires_at" bigint NOT NULL, "created_at" bigint NOT NULL, "updated_at" bigint NOT NULL, "version" integer NOT NULL, CONSTRAINT "PK_atproto_oauth_session" PRIMARY KEY ("did"))`,
    `CREATE INDEX "IDX_atproto_oauth_session_expires_at" ON "atproto_oauth_session" ("expires_at")`,
    `CREATE TABLE "atproto_app_session" ("id" character varying(64) NOT NULL, "did" character varying(512) NOT NULL, "created_at" bigint NOT NULL, "expires_at" bigint NOT NULL, "last_seen_at" bigint NOT NULL, "revoked_at" bigint, "user_agent" character varying(512), CONSTRAINT "PK_atproto_app_session" PRIMARY KEY ("id"))`,
    `CREATE INDEX "IDX_atproto_app_session_did" ON "atproto_app_session" ("did")`,
    `CREATE INDEX "IDX_atproto_app_session_expires_at" ON "atproto_app_session" ("expires_at")`,
    `CREATE INDEX "IDX_atproto_app_session_last_seen_at" ON "atproto_app_session" ("last_seen_at")`,
    `CREATE INDEX "IDX_atproto_app_session_revoked_at" ON "atproto_app_session" ("revoked_at")`,
  ],
  mysql: [
    'CREATE TABLE `atproto_oauth_state` (`key` varchar(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `data` json NOT NULL, `created_at` bigint NOT NULL, `expires_at` bigint NOT NULL, INDEX `IDX_atproto_oauth_state_expires_at` (`expires_at`), PRIMARY KEY (`key`)) ENGINE=InnoDB',
    'CREATE TABLE `atproto_oauth_session` (`did` varchar(512) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `token_set` json NOT NULL, `dpop_key` json NOT NULL, `auth_method` varchar(255) NOT NULL, `issuer` varchar(2048) NOT NULL, `pds_url` varchar(2048) NOT NULL, `access_expires_at` bigint NULL, `expires_at` bigint NOT NULL, `created_at` bigint NOT NULL, `updated_at` bigint NOT NULL, `version` int NOT NULL, INDEX `IDX_atproto_oauth_session_expires_at` (`expires_at`), PRIMARY KEY (`did`)) ENGINE=InnoDB',
    'CREATE TABLE `atproto_app_session` (`id` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `did` varchar(512) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `created_at` bigint NOT NULL, `expires_at` bigint NOT NULL, `last_seen_at` bigint NOT NULL, `revoked_at` bigint NULL, `user_agent` varchar(512) NULL, INDEX `IDX_atproto_app_session_did` (`did`), INDEX `IDX_atproto_app_session_expires_at` (`expires_at`), INDEX `IDX_atproto_app_session_last_seen_at` (`last_seen_at`), INDEX `IDX_atproto_app_session_revoked_at` (`revoked_at`), PRIMARY KEY (`id`)) ENGINE=InnoDB',
  ],
};

const DOWN: Record<SqlFamily, string[]> = {
  sqlite: [
    `DROP TABLE "atproto_app_session"`,
    `DROP TABLE "atproto_oauth_session"`,
    `DROP TABLE "atproto_oauth_state"`,
  ],
  postgres: [
    `DROP TABLE "atproto_app_session"`,
    `DROP TABLE "atproto_oauth_session"`,
    `DROP TABLE "atproto_oauth_state"`,
  ],
  mysql: [
    'DROP TABLE `atproto_app_session`',
    'DROP TABLE `atproto_oauth_session`',
    'DROP TABLE `atproto_oauth_state`',
  ],
};

/**
 * Creates the OAuth state, OAuth session and app session tables with their indexes.
 * @publicApi
 */
export class AtProtoInit1763800000000 implements MigrationInterface {
  name = 'AtProtoInit1763800000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const sql of UP[familyOfRunner(queryRunner)]) await queryRunner.query(sql);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const sql of DOWN[familyOfRunner(queryRunner)]) await queryRunner.query(sql);
  }
}
