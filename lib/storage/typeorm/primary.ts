import type { DataSource, EntityManager } from 'typeorm';

/**
 * Runs `work` with an EntityManager bound to a query runner on the primary ('master'),
 * released when `work` settles.
 *
 * Why: with TypeORM `replication` configured, every SelectQueryBuilder (so `find`,
 * `findOne`, `getRawMany`) runs on `dataSource.defaultReplicationModeForReads()`, a replica
 * unless `replication.defaultMode` says otherwise. A replica lags: it can hand back the
 * refresh token a refresh has just rotated (a replay, and the user is logged out), an app
 * session that was just revoked, or miss an OAuth state written a moment before. Every
 * read of these stores must see the last write, so it goes to the primary.
 *
 * Why a query runner per call: it is what TypeORM itself does for each query it runs
 * outside a transaction (a runner created, one pool connection taken for the query and
 * handed back on release), only with the mode set to 'master' instead of the read default.
 * The cost on the hot path (an app-session lookup on a cache miss) is one pool checkout
 * per read, as before, plus an EntityManager object; no transaction, no extra round trip.
 * Without `replication` the driver has only the primary pool, so nothing changes. On
 * SQLite the driver hands out its one shared runner, and releasing it is a no-op.
 * Callers run it inside their transient retry, so a retry after a lost connection takes
 * a fresh runner instead of reusing the broken one.
 * @internal
 */
export async function onPrimary<T>(
  dataSource: DataSource,
  work: (manager: EntityManager) => Promise<T>,
): Promise<T> {
  const runner = dataSource.createQueryRunner('master');
  try {
    return await work(runner.manager);
  } finally {
    await runner.release();
  }
}
