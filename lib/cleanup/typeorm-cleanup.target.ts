import {
  Brackets,
  type DataSource,
  type EntityManager,
  In,
  type ObjectLiteral,
  type Repository,
} from 'typeorm';
import { API_KEY_TABLE, AtProtoApiKeyEntity } from '../storage/entities/api-key.entity.js';
import {
  APP_SESSION_TABLE,
  AtProtoAppSessionEntity,
} from '../storage/entities/app-session.entity.js';
import { AtProtoOAuthSessionEntity } from '../storage/entities/oauth-session.entity.js';
import { AtProtoOAuthStateEntity } from '../storage/entities/oauth-state.entity.js';
import { type TransientRetryOptions, withTransientRetry } from '../storage/transient-retry.js';
import { chunked } from '../storage/typeorm/chunks.js';
import { type BatchCondition, deleteBatch } from '../storage/typeorm/delete-batch.js';
import { onPrimary } from '../storage/typeorm/primary.js';
import type { CleanupTarget } from './cleanup.interface.js';

/**
 * Batched deletion on TypeORM. Each batch selects up to `batchSize` primary keys by an
 * indexed condition, then deletes those keys *with the condition repeated*: a row that
 * changed in between (a session refreshed, an app session used) is left alone. Selecting
 * first keeps the DELETE small and portable (MySQL/MariaDB refuse LIMIT inside IN). The
 * native store's cleanup batches are the same function (`deleteBatch`).
 *
 * Every select runs on the primary (see `onPrimary`): a lagging replica would miss rows
 * written a moment before, and, worse, miss a user's new app session and have cleanup
 * revoke the OAuth session of a user who is signed in. Lists of keys are cut into
 * statements of at most 10,000 keys (drivers cap bind parameters, see `chunks.ts`).
 *
 * An OAuth session is in use while its DID has an active app session or an active API key
 * (see `CleanupTarget`): both in-use queries probe the two tables by their `did` index.
 * @internal
 */
export class TypeOrmCleanupTarget implements CleanupTarget {
  readonly #dataSource: DataSource;
  readonly #states: Repository<AtProtoOAuthStateEntity>;
  readonly #sessions: Repository<AtProtoOAuthSessionEntity>;
  readonly #appSessions: Repository<AtProtoAppSessionEntity>;
  readonly #apiKeys: Repository<AtProtoApiKeyEntity>;
  readonly #q: (column: string) => string;

  constructor(
    dataSource: DataSource,
    private readonly retry?: TransientRetryOptions,
  ) {
    this.#dataSource = dataSource;
    this.#states = dataSource.getRepository(AtProtoOAuthStateEntity);
    this.#sessions = dataSource.getRepository(AtProtoOAuthSessionEntity);
    this.#appSessions = dataSource.getRepository(AtProtoAppSessionEntity);
    this.#apiKeys = dataSource.getRepository(AtProtoApiKeyEntity);
    this.#q = (column) => dataSource.driver.escape(column);
  }

  async deleteExpiredStates(now: number, batchSize: number): Promise<number> {
    const where: BatchCondition = (qb) =>
      qb.where(`${this.#q('expires_at')} < :now`, { now }) as typeof qb;
    return (await this.#batch(this.#states, where, batchSize)).deleted;
  }

  async deleteExpiredOAuthSessions(now: number, batchSize: number): Promise<number> {
    const where: BatchCondition = (qb) =>
      qb.where(`${this.#q('expires_at')} < :now`, { now }) as typeof qb;
    return (await this.#batch(this.#sessions, where, batchSize)).deleted;
  }

  async deleteEndedAppSessions(
    cutoffs: { now: number; idleBefore: number; revokedBefore: number },
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }> {
    const where: BatchCondition = (qb) =>
      qb.where(
        new Brackets((w) =>
          w
            .where(`${this.#q('expires_at')} < :now`, cutoffs)
            .orWhere(`${this.#q('last_seen_at')} < :idleBefore`, cutoffs)
            .orWhere(`${this.#q('revoked_at')} < :revokedBefore`, cutoffs),
        ),
      ) as typeof qb;
    const r = await this.#batch(this.#appSessions, where, batchSize, 'did');
    return { deleted: r.deleted, dids: [...new Set(r.selected)] };
  }

  async deleteEndedApiKeys(
    endedBefore: number,
    batchSize: number,
  ): Promise<{ deleted: number; dids: string[] }> {
    const where: BatchCondition = (qb) =>
      qb.where(
        new Brackets((w) =>
          w
            .where(`${this.#q('revoked_at')} < :endedBefore`, { endedBefore })
            .orWhere(`${this.#q('expires_at')} < :endedBefore`, { endedBefore }),
        ),
      ) as typeof qb;
    const r = await this.#batch(this.#apiKeys, where, batchSize, 'did');
    return { deleted: r.deleted, dids: [...new Set(r.selected)] };
  }

  async didsWithoutActiveAppSession(
    dids: string[],
    cutoffs: { now: number; idleBefore: number },
  ): Promise<string[]> {
    if (dids.length === 0) return [];
    const q = this.#q;
    const active = new Set<string>();
    // Per chunk of DIDs, one indexed lookup (by the did index) in each table, not one per DID.
    // Two statements rather than a UNION: each binds the chunk once, within the 10,000 cap.
    for (const chunk of chunked([...new Set(dids)])) {
      const withSession = await withTransientRetry(
        'Cleanup: finding active app sessions',
        () =>
          this.#onPrimary((m) =>
            this.#appSessions
              .createQueryBuilder(undefined, m.queryRunner)
              .select(`DISTINCT ${q('did')}`, 'did')
              .where({ did: In(chunk) })
              .andWhere(`${q('revoked_at')} IS NULL`)
              .andWhere(`${q('expires_at')} > :now`, cutoffs)
              .andWhere(`${q('last_seen_at')} > :idleBefore`, cutoffs)
              .getRawMany<{ did: string }>(),
          ),
        this.retry,
      );
      for (const r of withSession) active.add(r.did);
      const rest = chunk.filter((did) => !active.has(did));
      if (rest.length === 0) continue;
      const withKey = await withTransientRetry(
        'Cleanup: finding active API keys',
        () =>
          this.#onPrimary((m) =>
            this.#apiKeys
              .createQueryBuilder(undefined, m.queryRunner)
              .select(`DISTINCT ${q('did')}`, 'did')
              .where({ did: In(rest) })
              .andWhere(`${q('revoked_at')} IS NULL`)
              .andWhere(
                new Brackets((w) =>
                  w
                    .where(`${q('expires_at')} IS NULL`)
                    .orWhere(`${q('expires_at')} > :now`, cutoffs),
                ),
              )
              .getRawMany<{ did: string }>(),
          ),
        this.retry,
      );
      for (const r of withKey) active.add(r.did);
    }
    return dids.filter((did) => !active.has(did));
  }

  async isInUse(did: string, cutoffs: { now: number; idleBefore: number }): Promise<boolean> {
    const q = this.#q;
    // The two probes of `didsWithoutActiveAppSession` in one round trip (this runs under the
    // DID's lock, once per revocation); LIMIT 1 ends it at the first match, on every dialect.
    const sql =
      `SELECT 1 AS ${q('x')} FROM ${q(APP_SESSION_TABLE)} a WHERE a.${q('did')} = :did ` +
      `AND a.${q('revoked_at')} IS NULL AND a.${q('expires_at')} > :now ` +
      `AND a.${q('last_seen_at')} > :idleBefore ` +
      `UNION ALL SELECT 1 AS ${q('x')} FROM ${q(API_KEY_TABLE)} k WHERE k.${q('did')} = :did ` +
      `AND k.${q('revoked_at')} IS NULL ` +
      `AND (k.${q('expires_at')} IS NULL OR k.${q('expires_at')} > :now) LIMIT 1`;
    const [query, parameters] = this.#dataSource.driver.escapeQueryWithParameters(sql, {
      did,
      now: cutoffs.now,
      idleBefore: cutoffs.idleBefore,
    });
    const rows = await withTransientRetry(
      'Cleanup: checking whether an OAuth session is in use',
      () => this.#onPrimary((m) => m.query(query, parameters) as Promise<unknown[]>),
      this.retry,
    );
    return rows.length > 0;
  }

  async didsWithOAuthSession(dids: string[], now: number): Promise<string[]> {
    const found = new Set<string>();
    // By the primary key, a chunk of DIDs per statement (see `chunks.ts`).
    for (const chunk of chunked([...new Set(dids)])) {
      const rows = await withTransientRetry(
        'Cleanup: finding OAuth sessions',
        () =>
          this.#onPrimary((m) =>
            this.#sessions
              .createQueryBuilder(undefined, m.queryRunner)
              .select(this.#q('did'), 'did')
              .where({ did: In(chunk) })
              .andWhere(`${this.#q('expires_at')} > :now`, { now })
              .getRawMany<{ did: string }>(),
          ),
        this.retry,
      );
      for (const r of rows) found.add(r.did);
    }
    return dids.filter((did) => found.has(did));
  }

  async oauthSessionsWithoutActiveAppSession(
    cutoffs: { now: number; idleBefore: number },
    afterDid: string | undefined,
    limit: number,
  ): Promise<string[]> {
    if (!Number.isSafeInteger(limit) || limit < 1) return [];
    const q = this.#q;
    // One statement per page: the OAuth sessions in primary-key order after `afterDid`
    // (keyset pagination on the primary key), each probed for an active app session and for
    // an active API key by the did index of each table (NOT EXISTS: anti-joins that stop at
    // the first match).
    const active =
      `SELECT 1 FROM ${q(APP_SESSION_TABLE)} a WHERE a.${q('did')} = s.${q('did')} ` +
      `AND a.${q('revoked_at')} IS NULL AND a.${q('expires_at')} > :now ` +
      `AND a.${q('last_seen_at')} > :idleBefore`;
    const activeKey =
      `SELECT 1 FROM ${q(API_KEY_TABLE)} k WHERE k.${q('did')} = s.${q('did')} ` +
      `AND k.${q('revoked_at')} IS NULL ` +
      `AND (k.${q('expires_at')} IS NULL OR k.${q('expires_at')} > :now)`;
    const rows = await withTransientRetry(
      'Cleanup: finding OAuth sessions without an active app session',
      () =>
        this.#onPrimary((m) => {
          let qb = this.#sessions
            .createQueryBuilder('s', m.queryRunner)
            .select(`s.${q('did')}`, 'did')
            .where(`NOT EXISTS (${active})`, cutoffs)
            .andWhere(`NOT EXISTS (${activeKey})`, cutoffs);
          if (afterDid !== undefined) qb = qb.andWhere(`s.${q('did')} > :afterDid`, { afterDid });
          return qb
            .orderBy(`s.${q('did')}`, 'ASC')
            .limit(limit)
            .getRawMany<{ did: string }>();
        }),
      this.retry,
    );
    return rows.map((r) => r.did);
  }

  async #batch<E extends ObjectLiteral>(
    repo: Repository<E>,
    where: BatchCondition,
    batchSize: number,
    alsoSelect?: string,
  ): Promise<{ deleted: number; selected: string[] }> {
    return deleteBatch(this.#dataSource, repo, where, batchSize, { retry: this.retry, alsoSelect });
  }

  #onPrimary<T>(work: (manager: EntityManager) => Promise<T>): Promise<T> {
    return onPrimary(this.#dataSource, work);
  }
}
