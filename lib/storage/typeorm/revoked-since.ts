import type { DataSource, ObjectLiteral, Repository } from 'typeorm';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { onPrimary } from './primary.js';

/**
 * The rows of `repo`'s table revoked after `since`, oldest revocation first, at most
 * `limit`, read on the primary: a range scan of the table's `revoked_at` index (the rows
 * revoked in the last moments, not the table). What the revocation cursor polls, for app
 * sessions and API keys alike (`revokedSince` of their stores).
 * @internal
 */
export async function readRevokedSince(
  dataSource: DataSource,
  repo: Repository<ObjectLiteral>,
  what: string,
  since: Date,
  limit: number,
  retry: TransientRetryOptions | undefined,
): Promise<Array<{ id: string; did: string; revokedAt: Date }>> {
  const q = (column: string) => dataSource.driver.escape(column);
  const rows = await withTransientRetry(
    `Reading recently revoked ${what}`,
    () =>
      onPrimary(dataSource, (m) =>
        repo
          .createQueryBuilder(undefined, m.queryRunner)
          .select(q('id'), 'id')
          .addSelect(q('did'), 'did')
          .addSelect(q('revoked_at'), 'revokedAt')
          .where(`${q('revoked_at')} > :since`, { since: since.getTime() })
          .orderBy(q('revoked_at'), 'ASC')
          .limit(limit)
          .getRawMany<{ id: string; did: string; revokedAt: string | number }>(),
      ),
    retry,
  );
  return rows.map((r) => ({ id: r.id, did: r.did, revokedAt: new Date(Number(r.revokedAt)) }));
}
