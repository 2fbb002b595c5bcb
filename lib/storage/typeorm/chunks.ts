/**
 * Longest list of keys this library puts in one `IN (...)`. Each key is a bind parameter,
 * and drivers cap them per statement: 65,535 on PostgreSQL (the protocol's 16-bit count)
 * and MySQL/MariaDB (prepared statements), 32,766 on SQLite (better-sqlite3's
 * SQLITE_MAX_VARIABLE_NUMBER). 10,000 stays well under all three with room for the
 * statement's other parameters, and keeps each statement short.
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
