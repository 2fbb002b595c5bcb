import type { NodeSavedSession } from '@atproto/oauth-client-node';
import { type DataSource, type Repository } from 'typeorm';
import { AtProtoOAuthSessionEntity } from '../entities/oauth-session.entity.js';
import type { AtProtoSessionStore } from '../store.interface.js';
import { withTransientRetry } from '../transient-retry.js';
import { assertSessionBelongsTo, assertValidDid } from '../validation.js';
import type { TypeOrmStoreOptions } from './typeorm-state.store.js';
import { upsertRow } from './upsert.js';

/**
 * OAuth session store on TypeORM: one row per DID, the token set and the DPoP key in
 * separate encrypted columns, issuer / PDS / expiry in plain columns for operations.
 * Writes are upserts and transient failures are retried before an error escapes, because
 * the OAuth client revokes a session it cannot persist.
 * @publicApi
 */
export class TypeOrmSessionStore implements AtProtoSessionStore {
  readonly #repo: Repository<AtProtoOAuthSessionEntity>;
  readonly #options: TypeOrmStoreOptions;
  readonly #now: () => number;
  readonly #versionColumn: string;

  constructor(dataSource: DataSource, options: TypeOrmStoreOptions) {
    this.#repo = dataSource.getRepository(AtProtoOAuthSessionEntity);
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#versionColumn = dataSource.driver.escape('version');
  }

  async get(did: string): Promise<NodeSavedSession | undefined> {
    assertValidDid(did);
    const row = await withTransientRetry(
      'Reading an OAuth session',
      () => this.#repo.findOne({ where: { did } }),
      this.#options.retry,
    );
    if (!row || row.expiresAt.getTime() <= this.#now()) return undefined;
    const tokenSet = JSON.parse(row.tokenSet) as NodeSavedSession['tokenSet'];
    assertSessionBelongsTo(did, tokenSet.sub);
    return {
      tokenSet,
      dpopJwk: JSON.parse(row.dpopKey) as NodeSavedSession['dpopJwk'],
      authMethod: JSON.parse(row.authMethod) as NodeSavedSession['authMethod'],
    };
  }

  async set(did: string, value: NodeSavedSession): Promise<void> {
    assertValidDid(did);
    assertSessionBelongsTo(did, value.tokenSet?.sub);
    const now = this.#now();
    const { tokenSet } = value;
    const update = {
      tokenSet: JSON.stringify(tokenSet),
      dpopKey: JSON.stringify(value.dpopJwk),
      authMethod: JSON.stringify(value.authMethod),
      issuer: tokenSet.iss,
      pdsUrl: tokenSet.aud,
      accessExpiresAt: tokenSet.expires_at ? new Date(tokenSet.expires_at) : null,
      expiresAt: new Date(now + this.#options.ttlMs),
      updatedAt: new Date(now),
      version: () => `${this.#versionColumn} + 1`,
    };
    await withTransientRetry(
      'Saving an OAuth session',
      () => upsertRow(this.#repo, { did }, update, { createdAt: new Date(now), version: 1 }),
      this.#options.retry,
    );
  }

  async del(did: string): Promise<void> {
    assertValidDid(did);
    await withTransientRetry(
      'Deleting an OAuth session',
      () => this.#repo.delete({ did }),
      this.#options.retry,
    );
  }
}
