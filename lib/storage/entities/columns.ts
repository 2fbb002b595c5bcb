import type { ValueTransformer } from 'typeorm';

/**
 * Instants are stored as `bigint` milliseconds since the Unix epoch (UTC), read back as
 * `Date`. The one representation behaves the same on SQLite, PostgreSQL and MySQL/MariaDB:
 * no server or connection time zone can shift it, and MySQL's DATETIME would drop the
 * milliseconds. The drivers hand a bigint back as a string (pg, mysql2) or a number
 * (better-sqlite3); both are accepted.
 * @internal
 */
export const epochMillis: ValueTransformer = {
  to: (value: unknown) => (value instanceof Date ? value.getTime() : value),
  from: (value: unknown) =>
    value === null || value === undefined ? value : new Date(Number(value)),
};

/**
 * Secret columns use the `json` type holding the envelope as a JSON string: MySQL and
 * MariaDB cap TEXT at 64 KiB, and `json` is the one large type that TypeORM accepts for a
 * single entity on SQLite, PostgreSQL and MySQL/MariaDB alike.
 * @internal
 */
export const SECRET_COLUMN_TYPE = 'json' as const;

/** Longest DID accepted (did:plc is 32 characters; did:web is bounded by its hostname). @internal */
export const DID_MAX_LENGTH = 512;
/** Longest OAuth state key accepted. @internal */
export const STATE_KEY_MAX_LENGTH = 255;
/** Longest URL column (issuer, PDS). @internal */
export const URL_MAX_LENGTH = 2048;
