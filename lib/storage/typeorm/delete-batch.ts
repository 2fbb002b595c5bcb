import {
  type DataSource,
  type DeleteQueryBuilder,
  In,
  type ObjectLiteral,
  type Repository,
  type SelectQueryBuilder,
} from 'typeorm';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { chunked } from './chunks.js';
import { onPrimary } from './primary.js';

/**
 * The condition a cleanup batch deletes by, applied alike to its SELECT and its DELETE. The
 * SELECT aliases the table by its own name, so that a condition can name the table (in a
 * correlated subquery) as it would in the DELETE, which has no alias.
 * @internal
 */
export type BatchCondition = <
  Q extends SelectQueryBuilder<ObjectLiteral> | DeleteQueryBuilder<ObjectLiteral>,
>(
  qb: Q,
) => Q;

/**
 * One cleanup batch: selects the primary keys of up to `batchSize` rows of `repo` matching
 * `where` (on the primary, see `onPrimary`), then deletes those keys *with `where` repeated*,
 * in statements of at most 10,000 keys (see `chunks.ts`): a row that changed in between (a
 * session refreshed, an app session used) is left alone. Selecting first keeps the DELETE
 * small and portable (MySQL/MariaDB refuse LIMIT inside IN).
 *
 * Resolves how many rows were deleted and, when `alsoSelect` names a column, its value in
 * each selected row (deleted or left alone). A retried DELETE counts the keys that are gone.
 * @internal
 */
export async function deleteBatch<E extends ObjectLiteral>(
  dataSource: DataSource,
  repo: Repository<E>,
  where: BatchCondition,
  batchSize: number,
  options: { retry?: TransientRetryOptions; alsoSelect?: string } = {},
): Promise<{ deleted: number; selected: string[] }> {
  const { retry, alsoSelect } = options;
  const q = (column: string) => dataSource.driver.escape(column);
  const table = repo.metadata.tableName;
  const key = repo.metadata.primaryColumns[0]!;
  const rows = await withTransientRetry(
    `Cleanup: selecting from ${table}`,
    () =>
      onPrimary(dataSource, (m) => {
        let qb = repo
          .createQueryBuilder(table, m.queryRunner)
          .select(`${q(table)}.${q(key.databaseName)}`, 'k');
        if (alsoSelect) qb = qb.addSelect(`${q(table)}.${q(alsoSelect)}`, 'x');
        return where(qb as SelectQueryBuilder<ObjectLiteral>)
          .limit(batchSize)
          .getRawMany<{ k: string; x?: string }>();
      }),
    retry,
  );
  let deleted = 0;
  for (const keys of chunked(rows.map((r) => r.k))) {
    let attempt = 0;
    deleted += await withTransientRetry(
      `Cleanup: deleting from ${table}`,
      async () => {
        attempt++;
        const result = await where(
          repo.createQueryBuilder().delete() as DeleteQueryBuilder<ObjectLiteral>,
        )
          .andWhere({ [key.propertyName]: In(keys) })
          .execute();
        if (attempt === 1) return result.affected ?? 0;
        // On a retry the first attempt may have deleted the rows before its connection was
        // lost, and this one then deletes none: count the keys that are gone instead, so
        // that a batch is not reported empty (which ends the run) when it was not. A row
        // another instance's cleanup deleted meanwhile counts too; a row left alone because
        // it changed (see above) does not.
        const present = await onPrimary(dataSource, (m) =>
          repo
            .createQueryBuilder(undefined, m.queryRunner)
            .where({ [key.propertyName]: In(keys) })
            .getCount(),
        );
        return keys.length - present;
      },
      retry,
    );
  }
  return { deleted, selected: alsoSelect ? rows.map((r) => String(r.x)) : [] };
}
