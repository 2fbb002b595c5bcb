import type { FindOptionsWhere, ObjectLiteral, Repository } from 'typeorm';
import type { TransientRetryOptions } from '../transient-retry.js';
import { updateOnce } from './retried-write.js';

/** A row that fenced writes compare against: every write increments `version`. */
interface VersionedRow extends ObjectLiteral {
  version: number;
  updatedAt: Date;
}

/**
 * The fenced write of a session row (`setIfVersion` of the OAuth and bot session stores): one
 * conditional UPDATE of the row `where` selects that sets `columns` and increments its version,
 * applied only while the row is still at `version` and, when `liveAt` is given, has not expired
 * by then (`expires_at > liveAt`). It never inserts, so a row deleted meanwhile stays deleted.
 *
 * Transient failures are retried (see {@link updateOnce}). A retry that matches nothing reads
 * the row again (`read`, on the primary): the first attempt may have landed before its
 * connection was lost. The write is ours if the row is at `version + 1` with our `updatedAt`
 * and holds exactly what we wrote in each of the `ours` columns (a fresh token set, a DPoP
 * key); anything else is another writer's, and we were fenced out.
 *
 * Resolves the new version, or `undefined` when fenced out.
 * @internal
 */
export async function updateIfVersion<Row extends VersionedRow>(
  repo: Repository<Row>,
  write: {
    /** What is written, for the error a retry budget ends in, e.g. `Saving a bot session`. */
    readonly what: string;
    /** The row's primary key. */
    readonly where: FindOptionsWhere<Row>;
    /** The version read, that the row must still be at. */
    readonly version: number;
    /** The columns to set (all but `version` and `created_at`), `updatedAt` the write instant. */
    readonly columns: Partial<Row> & { readonly updatedAt: Date };
    /** `version = version + 1` as raw SQL for the query builder. */
    readonly increment: () => string;
    /** The columns of `columns` that only this write could have put in the row. */
    readonly ours: ReadonlyArray<keyof Row & string>;
    /** When given, a row whose `expires_at` is at or before this instant counts as gone. */
    readonly liveAt?: number;
    /** The row as it is now, on the primary, or null when there is none. */
    readonly read: () => Promise<Row | null>;
    readonly retry: TransientRetryOptions | undefined;
  },
): Promise<number | undefined> {
  const { version, columns } = write;
  const applied = await updateOnce(
    write.what,
    () => {
      const update = repo
        .createQueryBuilder()
        .update()
        .set({ ...columns, version: write.increment } as never)
        .where({ ...write.where, version });
      if (write.liveAt !== undefined) {
        update.andWhere(`${update.escape('expires_at')} > :now`, { now: write.liveAt });
      }
      return update.execute();
    },
    async () => {
      const row = await write.read();
      return (
        row !== null &&
        Number(row.version) === version + 1 &&
        row.updatedAt.getTime() === columns.updatedAt.getTime() &&
        write.ours.every((column) => row[column] === columns[column])
      );
    },
    write.retry,
  );
  return applied ? version + 1 : undefined;
}
