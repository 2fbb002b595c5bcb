import type { QueryRunner } from 'typeorm';
import { AtProtoConfigError } from '../../errors/at-proto-config.error.js';

/** The SQL families this library ships schema and queries for. @internal */
export type SqlFamily = 'sqlite' | 'postgres' | 'mysql';

/** The SQL family of a DataSource type, or `undefined` if this library does not support it. @internal */
export function sqlFamilyOf(type: string): SqlFamily | undefined {
  switch (type) {
    case 'better-sqlite3':
    case 'sqlite':
      return 'sqlite';
    case 'postgres':
      return 'postgres';
    case 'mysql':
    case 'mariadb':
      return 'mysql';
    default:
      return undefined;
  }
}

/** @internal */
export function requireSqlFamily(type: string): SqlFamily {
  const family = sqlFamilyOf(type);
  if (!family) {
    throw new AtProtoConfigError(
      [
        `DataSource type "${type}" is not supported: use better-sqlite3, postgres, mysql or mariadb.`,
      ],
      'database',
    );
  }
  return family;
}

/** @internal */
export function familyOfRunner(queryRunner: QueryRunner): SqlFamily {
  return requireSqlFamily(queryRunner.connection.options.type);
}
