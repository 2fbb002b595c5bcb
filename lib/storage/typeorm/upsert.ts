import type { ObjectLiteral, Repository } from 'typeorm';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';

// The three drivers have three different native UPSERTs, and TypeORM's `orUpdate` can only
// copy the inserted values: it cannot increment a version column. Update-then-insert is
// portable, keeps column transformers (encryption) applied, and is safe under races: if
// another writer inserts the row between our UPDATE and INSERT, the INSERT hits the primary
// key and we go round again and UPDATE it. Every value we write differs from the stored one
// (fresh IVs, new timestamps), so "0 rows affected" always means "no row", even on MySQL.
const MAX_ROUNDS = 4;

/** @internal */
export function isUniqueViolation(error: unknown): boolean {
  const e = (error as { driverError?: unknown }).driverError ?? error;
  const { code, errno } = (e ?? {}) as { code?: unknown; errno?: unknown };
  return (
    code === '23505' || // PostgreSQL unique_violation
    errno === 1062 || // MySQL/MariaDB ER_DUP_ENTRY
    code === 'SQLITE_CONSTRAINT_PRIMARYKEY' ||
    code === 'SQLITE_CONSTRAINT_UNIQUE'
  );
}

/**
 * Updates the row with primary key `where`, or inserts it with `insertOnly` added.
 * `update` may contain raw SQL functions (e.g. a version increment).
 * @internal
 */
export async function upsertRow<E extends ObjectLiteral>(
  repository: Repository<E>,
  where: Partial<E>,
  update: Record<string, unknown>,
  insertOnly: Record<string, unknown>,
): Promise<void> {
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const updated = await repository
      .createQueryBuilder()
      .update()
      .set(update as never)
      .where(where)
      .execute();
    if ((updated.affected ?? 0) > 0) return;
    const inserted: Record<string, unknown> = { ...where, ...insertOnly };
    for (const [k, v] of Object.entries(update)) if (typeof v !== 'function') inserted[k] = v;
    try {
      await repository
        .createQueryBuilder()
        .insert()
        .values(inserted as never)
        .execute();
      return;
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
    }
  }
  throw new AtProtoStoreError(
    `Saving a row of ${repository.metadata.tableName} did not converge: it was deleted and ` +
      `inserted again by other writers ${MAX_ROUNDS} times in a row. Retry the operation.`,
  );
}
