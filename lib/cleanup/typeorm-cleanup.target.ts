import {
  Brackets,
  type DataSource,
  type DeleteQueryBuilder,
  In,
  type ObjectLiteral,
  type Repository,
  type SelectQueryBuilder,
} from 'typeorm';
import { AtProtoAppSessionEntity } from '../storage/entities/app-session.entity.js';
import { AtProtoOAuthSessionEntity } from '../storage/entities/oauth-session.entity.js';
import { AtProtoOAuthStateEntity } from '../storage/entities/oauth-state.entity.js';
import { type TransientRetryOptions, withTransientRetry } from '../storage/transient-retry.js';
import type { CleanupTarget } from './cleanup.interface.js';

type Where = <Q extends SelectQueryBuilder<ObjectLiteral> | DeleteQueryBuilder<ObjectLiteral>>(
  qb: Q,
) => Q;

/**
 * Batched deletion on TypeORM. Each batch selects up to `batchSize` primary keys by an
 * indexed condition, then deletes those keys *with the condition repeated*: a row that
 * changed in between (a session refreshed, an app session used) is left alone. Selecting
 * first keeps the DELETE small and portable (MySQL/MariaDB refuse LIMIT inside IN).
 * @internal
 */
export class TypeOrmCleanupTarget implements CleanupTarget {
  readonly #states: Repository<AtProtoOAuthStateEntity>;
  readonly #sessions: Repository<AtProtoOAuthSessionEntity>;
  readonly #appSessions: Repository<AtProtoAppSessionEntity>;
  readonly #q: (column: string) => string;

  constructor(
    dataSource: DataSource,
    private readonly retry?: TransientRetryOptions,
  ) {
    this.#states = dataSource.getRepository(AtProtoOAuthStateEntity);
    this.#sessions = dataSource.getRepository(AtProtoOAuthSessionEntity);
    this.#appSessions = dataSource.getRepository(AtProtoAppSessionEntity);
    this.#q = (column) => dataSource.driver.escape(column);
  }

  async deleteExpiredStates(now: number, batchSize: number): Promise<number> {
    const where: Where = (qb) => qb.where(`${this.#q('expires_at')} < :now`, { now }) as typeof qb;
    return (await this.#batch(this.#states, 'key', where, batchSize)).deleted;
  }

  async deleteExpiredOAuthSessions(now: number, batchSize: number): Promise<number> {
    const where: Where = (qb) => qb.where(`${this.#q('expires_at')} < :now`, { now }) as typeof qb;
    return (await this.#batch(this.#sessions, 'did', where, batchSize)).deleted;
  }

  async deleteEndedAppSessions(
    cutoffs: { now: number; idleBefore: number; revokedBefore: number },
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }> {
    const where: Where = (qb) =>
      qb.where(
        new Brackets((w) =>
          w
            .where(`${this.#q('expires_at')} < :now`, cutoffs)
            .orWhere(`${this.#q('last_seen_at')} < :idleBefore`, cutoffs)
            .orWhere(`${this.#q('revoked_at')} < :revokedBefore`, cutoffs),
        ),
      ) as typeof qb;
    const r = await this.#batch(this.#appSessions, 'id', where, batchSize, 'did');
    return { deleted: r.deleted, dids: [...new Set(r.extra)] };
  }

  async didsWithoutActiveAppSession(
    dids: string[],
    cutoffs: { now: number; idleBefore: number },
  ): Promise<string[]> {
    if (dids.length === 0) return [];
    const q = this.#q;
    // One indexed lookup per batch (by the did index), not one per DID.
    const stillActive = await withTransientRetry(
      'Cleanup: finding active app sessions',
      () =>
        this.#appSessions
          .createQueryBuilder()
          .select(`DISTINCT ${q('did')}`, 'did')
          .where({ did: In(dids) })
          .andWhere(`${q('revoked_at')} IS NULL`)
          .andWhere(`${q('expires_at')} > :now`, cutoffs)
          .andWhere(`${q('last_seen_at')} > :idleBefore`, cutoffs)
          .getRawMany<{ did: string }>(),
      this.retry,
    );
    const active = new Set(stillActive.map((r) => r.did));
    return dids.filter((did) => !active.has(did));
  }

  async #batch<E extends ObjectLiteral>(
    repo: Repository<E>,
    keyColumn: string,
    where: Where,
    batchSize: number,
    extraColumn?: string,
  ): Promise<{ deleted: number; extra: string[] }> {
    const table = repo.metadata.tableName;
    const rows = await withTransientRetry(
      `Cleanup: selecting from ${table}`,
      () => {
        let qb = repo.createQueryBuilder().select(this.#q(keyColumn), 'k');
        if (extraColumn) qb = qb.addSelect(this.#q(extraColumn), 'x');
        return where(qb as SelectQueryBuilder<ObjectLiteral>)
          .limit(batchSize)
          .getRawMany<{ k: string; x?: string }>();
      },
      this.retry,
    );
    if (rows.length === 0) return { deleted: 0, extra: [] };
    const keyProperty = repo.metadata.primaryColumns[0]!.propertyName;
    const keys = rows.map((r) => r.k);
    const result = await withTransientRetry(
      `Cleanup: deleting from ${table}`,
      () =>
        where(repo.createQueryBuilder().delete() as DeleteQueryBuilder<ObjectLiteral>)
          .andWhere({ [keyProperty]: In(keys) })
          .execute(),
      this.retry,
    );
    return {
      deleted: result.affected ?? 0,
      extra: extraColumn ? rows.map((r) => String(r.x)) : [],
    };
  }
}
