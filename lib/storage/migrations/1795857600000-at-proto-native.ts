import type { MigrationInterface, QueryRunner } from 'typeorm';
import { familyOfRunner, type SqlFamily } from './dialect.js';

// Native apps' one-time codes and refresh-token families. As in the first migration, the
// SQL is what TypeORM generates from the entities, except on MySQL/MariaDB where the columns
// compared byte for byte (ids, DIDs, the redirect URI, the PKCE challenge and the jtis, all
// case-sensitive) are `ascii` with the binary `ascii_bin` collation: the default collations
// there compare case-insensitively, and a jti or challenge differing only in case would
// match.
const UP: Record<SqlFamily, string[]> = {
  sqlite: [
    `CREATE TABLE "atproto_native_code" ("id" varchar(64) PRIMARY KEY NOT NULL, "did" varchar(512) NOT NULL, "redirect_uri" varchar(2048) NOT NULL, "code_challenge" varchar(64) NOT NULL, "created_at" bigint NOT NULL, "expires_at" bigint NOT NULL, "used_at" bigint)`,
    `CREATE INDEX "IDX_atproto_native_code_did" ON "atproto_native_code" ("did")`,
    `CREATE INDEX "IDX_atproto_native_code_expires_at" ON "atproto_native_code" ("expires_at")`,
    `CREATE TABLE "atproto_native_refresh_family" ("id" varchar(64) PRIMARY KEY NOT NULL, "did" varchar(512) NOT NULL, "current_jti" varchar(64) NOT NULL, "previous_jti" varchar(64), "rotated_at" bigint NOT NULL, "created_at" bigint NOT NULL, "expires_at" bigint NOT NULL, "revoked_at" bigint)`,
    `CREATE INDEX "IDX_atproto_native_refresh_family_expires_at" ON "atproto_native_refresh_family" ("expires_at")`,
    `CREATE INDEX "IDX_atproto_native_refresh_family_revoked_at" ON "atproto_native_refresh_family" ("revoked_at")`,
  ],
  postgres: [
    `CREATE TABLE "atproto_native_code" ("id" character varying(64) NOT NULL, "did" character varying(512) NOT NULL, "redirect_uri" character varying(2048) NOT NULL, "code_challenge" character varying(64) NOT NULL, "created_at" bigint NOT NULL, "expires_at" bigint NOT NULL, "used_at" bigint, CONSTRAINT "PK_atproto_native_code" PRIMARY KEY ("id"))`,
    `CREATE INDEX "IDX_atproto_native_code_did" ON "atproto_native_code" ("did")`,
    `CREATE INDEX "IDX_atproto_native_code_expires_at" ON "atproto_native_code" ("expires_at")`,
    `CREATE TABLE "atproto_native_refresh_family" ("id" character varying(64) NOT NULL, "did" character varying(512) NOT NULL, "current_jti" character varying(64) NOT NULL, "previous_jti" character varying(64), "rotated_at" bigint NOT NULL, "created_at" bigint NOT NULL, "expires_at" bigint NOT NULL, "revoked_at" bigint, CONSTRAINT "PK_atproto_native_refresh_family" PRIMARY KEY ("id"))`,
    `CREATE INDEX "IDX_atproto_native_refresh_family_expires_at" ON "atproto_native_refresh_family" ("expires_at")`,
    `CREATE INDEX "IDX_atproto_native_refresh_family_revoked_at" ON "atproto_native_refresh_family" ("revoked_at")`,
  ],
  mysql: [
    'CREATE TABLE `atproto_native_code` (`id` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `did` varchar(512) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `redirect_uri` varchar(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `code_challenge` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `created_at` bigint NOT NULL, `expires_at` bigint NOT NULL, `used_at` bigint NULL, INDEX `IDX_atproto_native_code_did` (`did`), INDEX `IDX_atproto_native_code_expires_at` (`expires_at`), PRIMARY KEY (`id`)) ENGINE=InnoDB',
    'CREATE TABLE `atproto_native_refresh_family` (`id` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `did` varchar(512) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `current_jti` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, `previous_jti` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NULL, `rotated_at` bigint NOT NULL, `created_at` bigint NOT NULL, `expires_at` bigint NOT NULL, `revoked_at` bigint NULL, INDEX `IDX_atproto_native_refresh_family_expires_at` (`expires_at`), INDEX `IDX_atproto_native_refresh_family_revoked_at` (`revoked_at`), PRIMARY KEY (`id`)) ENGINE=InnoDB',
  ],
};

const DOWN: Record<SqlFamily, string[]> = {
  sqlite: [`DROP TABLE "atproto_native_refresh_family"`, `DROP TABLE "atproto_native_code"`],
  postgres: [`DROP TABLE "atproto_native_refresh_family"`, `DROP TABLE "atproto_native_code"`],
  mysql: ['DROP TABLE `atproto_native_refresh_family`', 'DROP TABLE `atproto_native_code`'],
};

/**
 * Creates the tables of native and CLI apps: one-time codes (`atproto_native_code`) and
 * refresh-token families (`atproto_native_refresh_family`), with their indexes.
 * @publicApi
 */
export class AtProtoNative1795857600000 implements MigrationInterface {
  name = 'AtProtoNative1795857600000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const sql of UP[familyOfRunner(queryRunner)]) await queryRunner.query(sql);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const sql of DOWN[familyOfRunner(queryRunner)]) await queryRunner.query(sql);
  }
}
