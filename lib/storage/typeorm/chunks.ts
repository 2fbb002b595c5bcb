/**
 * Longest list of keys this library puts in one `IN (...)`. Each key is a bind parameter,
 * and drivers cap them per statement: 65,535 on PostgreSQL (the protocol's 16-bit count;
 * past it the server answers "bind message has N parameter formats but 0 parameters"),
 * 32,766 on SQLite (better-sqlite3 13: "too many SQL variables"), 65,535 on MySQL/MariaDB
 * prepared statements (mysql2's plain `query`, which TypeORM uses, inlines the values and
 * is bounded by max_allowed_packet instead). 10,000 stays well under all of them with
 * room for the statement's other parameters, and keeps each statement short.
 * @internal
 */
export const MAX_KEYS_PER_STATEMENT = 10_000;

/**
 * `items` cut into consecutive slices of at most `size` (the last one shorter).
 * @internal
 */
export function chunked<T>(items: readonly T[], size = MAX_KEYS_PER_STATEMENT): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
