import type { NodeSavedState } from '@atproto/oauth-client-node';
import { type DataSource, type Repository } from 'typeorm';
import { AtProtoOAuthStateEntity } from '../entities/oauth-state.entity.js';
import type { AtProtoStateStore, AtProtoStoreOptions } from '../store.interface.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { assertValidStateKey } from '../validation.js';
import { onPrimary } from './primary.js';
import { upsertRow } from './upsert.js';

/**
 * Options of {@link TypeOrmStateStore}.
 * @publicApi
 */
export interface TypeOrmStoreOptions extends AtProtoStoreOptions {
  /** Retries of transient database failures. */
  retry?: TransientRetryOptions;
}

/**
 * OAuth state store on TypeORM. The whole saved state (PKCE verifier, DPoP key) is one
 * encrypted column. Reads go to the primary.
 * @publicApi
 */
export class TypeOrmStateStore implements AtProtoStateStore {
  readonly #dataSource: DataSource;
  readonly #repo: Repository<AtProtoOAuthStateEntity>;
  readonly #options: TypeOrmStoreOptions;
  readonly #now: () => number;

  constructor(dataSource: DataSource, options: TypeOrmStoreOptions) {
    this.#dataSource = dataSource;
    this.#repo = dataSource.getRepository(AtProtoOAuthStateEntity);
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  async get(key: string): Promise<NodeSavedState | undefined> {
    assertValidStateKey(key);
    const row = await withTransientRetry(
      'Reading an OAuth state',
      // On the primary (see onPrimary): a replica may not have the state written at /login yet.
      () =>
        onPrimary(this.#dataSource, (m) => m.findOne(AtProtoOAuthStateEntity, { where: { key } })),
      this.#options.retry,
    );
    if (!row || row.expiresAt.getTime() <= this.#now()) return undefined;
    return JSON.parse(row.data) as NodeSavedState;
  }

  async set(key: string, value: NodeSavedState): Promise<void> {
    assertValidStateKey(key);
    const now = this.#now();
    await withTransientRetry(
      'Saving an OAuth state',
      () =>
        upsertRow(
          this.#repo,
          { key },
          { data: JSON.stringify(value), expiresAt: new Date(now + this.#options.ttlMs) },
          { createdAt: new Date(now) },
        ),
      this.#options.retry,
    );
  }

  async del(key: string): Promise<void> {
    assertValidStateKey(key);
    await withTransientRetry(
      'Deleting an OAuth state',
      () => this.#repo.delete({ key }),
      this.#options.retry,
    );
  }
}
