import { Brackets, type DataSource, IsNull, type Repository } from 'typeorm';
import type { AtProtoApiKeyRecord, AtProtoApiKeyStore } from '../../api-keys/api-key.store.js';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import { API_KEY_TABLE, AtProtoApiKeyEntity } from '../entities/api-key.entity.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { assertValidDid } from '../validation.js';
import { onPrimary } from './primary.js';
import { PrimaryKeyRead } from './primary-key-read.js';
import { insertOnce, updateOnce } from './retried-write.js';
import { readRevokedSince } from './revoked-since.js';

const KEY_ID = /^[0-9a-f]{64}$/;

/**
 * API key store on TypeORM. Reads go to the primary (see `onPrimary`): a revoked key must
 * never be served from a lagging replica, nor a `last_used_at` written a moment before be
 * missed.
 *
 * Writes are retried after transient failures, and a lost connection leaves it unknown
 * whether the first attempt landed. Each write gives the same answer either way: `create`
 * accepts the duplicate key of its own retried insert; `revoke` and `touch` recognize the
 * instant they wrote.
 * @publicApi
 */
export class TypeOrmApiKeyStore implements AtProtoApiKeyStore {
  readonly #dataSource: DataSource;
  readonly #repo: Repository<AtProtoApiKeyEntity>;
  readonly #retry: TransientRetryOptions | undefined;
  readonly #q: (column: string) => string;
  readonly #byId: PrimaryKeyRead<AtProtoApiKeyEntity>;

  constructor(dataSource: DataSource, options: { retry?: TransientRetryOptions } = {}) {
    this.#dataSource = dataSource;
    this.#repo = dataSource.getRepository(AtProtoApiKeyEntity);
    this.#retry = options.retry;
    this.#q = (column) => dataSource.driver.escape(column);
    this.#byId = new PrimaryKeyRead(dataSource, AtProtoApiKeyEntity);
  }

  async create(record: AtProtoApiKeyRecord): Promise<void> {
    assertValidDid(record.did);
    assertKeyId(record.id);
    if (record.name.length > 100 || record.displayPrefix.length > 32) {
      throw new AtProtoStoreError(
        'An API key name is at most 100 characters, a display prefix at most 32.',
      );
    }
    // A duplicate key on a retry may be our own row: the id is the SHA-256 of a fresh random
    // key, so a row with it, our DID, name and creation time is the one we wrote.
    await insertOnce(
      'Creating an API key',
      () => this.#repo.insert({ ...record }),
      async () => {
        const stored = await this.#read(record.id);
        return (
          stored?.did === record.did &&
          stored.name === record.name &&
          stored.createdAt.getTime() === record.createdAt.getTime()
        );
      },
      'An API key with this id already exists: ids are the SHA-256 of a fresh random key, ' +
        'so the key was reused or the row was written by someone else.',
      this.#retry,
    );
  }

  async get(id: string): Promise<AtProtoApiKeyRecord | undefined> {
    if (typeof id !== 'string' || !KEY_ID.test(id)) return undefined;
    const row = await withTransientRetry('Reading an API key', () => this.#read(id), this.#retry);
    return row ? toRecord(row) : undefined;
  }

  async listForDid(did: string): Promise<AtProtoApiKeyRecord[]> {
    assertValidDid(did);
    const rows = await withTransientRetry(
      'Listing API keys',
      () =>
        onPrimary(this.#dataSource, (m) =>
          m.find(AtProtoApiKeyEntity, { where: { did }, order: { createdAt: 'DESC' } }),
        ),
      this.#retry,
    );
    return rows.map(toRecord);
  }

  async revoke(id: string, did: string, at: Date): Promise<boolean> {
    assertKeyId(id);
    assertValidDid(did);
    return updateOnce(
      'Revoking an API key',
      // Owner and "not revoked yet" in the WHERE clause: one statement decides, so no
      // other DID's key can be revoked, whatever runs in between.
      () => this.#repo.update({ id, did, revokedAt: IsNull() }, { revokedAt: at }),
      // After a lost reply: a key of this DID revoked at exactly our instant is ours.
      async () => {
        const row = await this.#read(id);
        return row?.did === did && row.revokedAt?.getTime() === at.getTime();
      },
      this.#retry,
    );
  }

  async touch(id: string, at: Date, staleBefore: Date): Promise<boolean> {
    assertKeyId(id);
    const q = this.#q;
    return updateOnce(
      'Recording the last use of an API key',
      // Conditional: only a value older than the interval (or none) is replaced, so when
      // several instances see the same stale value, one of them writes.
      () =>
        this.#repo
          .createQueryBuilder()
          .update()
          .set({ lastUsedAt: at })
          .where(`${q('id')} = :id`, { id })
          .andWhere(
            new Brackets((w) =>
              w
                .where(`${q('last_used_at')} IS NULL`)
                .orWhere(`${q('last_used_at')} < :staleBefore`, {
                  staleBefore: staleBefore.getTime(),
                }),
            ),
          )
          .execute(),
      async () => (await this.#read(id))?.lastUsedAt?.getTime() === at.getTime(),
      this.#retry,
    );
  }

  async hasActive(did: string, now: Date): Promise<boolean> {
    assertValidDid(did);
    const q = this.#q;
    const rows = await withTransientRetry(
      'Looking for an active API key',
      () =>
        onPrimary(this.#dataSource, (m) =>
          this.#repo
            .createQueryBuilder(undefined, m.queryRunner)
            .select(q('id'), 'id')
            .where({ did })
            .andWhere(`${q('revoked_at')} IS NULL`)
            .andWhere(
              new Brackets((w) =>
                w
                  .where(`${q('expires_at')} IS NULL`)
                  .orWhere(`${q('expires_at')} > :now`, { now: now.getTime() }),
              ),
            )
            .limit(1)
            .getRawMany<{ id: string }>(),
        ),
      this.#retry,
    );
    return rows.length > 0;
  }

  async revokedSince(
    since: Date,
    limit: number,
  ): Promise<Array<{ id: string; did: string; revokedAt: Date }>> {
    return readRevokedSince(this.#dataSource, this.#repo, 'API keys', since, limit, this.#retry);
  }

  /**
   * The key with id `id`, on the primary: the read behind every key-cache miss, without
   * TypeORM's entity path (see {@link PrimaryKeyRead}).
   */
  async #read(id: string): Promise<AtProtoApiKeyEntity | null> {
    return (await this.#byId.get(id)) ?? null;
  }
}

function assertKeyId(id: string): void {
  if (typeof id !== 'string' || !KEY_ID.test(id)) {
    throw new AtProtoStoreError(
      `An ${API_KEY_TABLE} id is the SHA-256 of its key in lowercase hex (64 characters).`,
    );
  }
}

function toRecord(row: AtProtoApiKeyEntity): AtProtoApiKeyRecord {
  return {
    id: row.id,
    did: row.did,
    name: row.name,
    displayPrefix: row.displayPrefix,
    scopes: row.scopes,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
    revokedAt: row.revokedAt,
    lastUsedAt: row.lastUsedAt,
  };
}
