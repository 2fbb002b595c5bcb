import { type DataSource, IsNull, type Repository } from 'typeorm';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import { AtProtoAppSessionEntity } from '../entities/app-session.entity.js';
import type { AppSessionRecord, AppSessionStore } from '../store.interface.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { assertValidDid } from '../validation.js';

const SESSION_ID = /^[0-9a-f]{64}$/;

/**
 * App session store on TypeORM.
 * @publicApi
 */
export class TypeOrmAppSessionStore implements AppSessionStore {
  readonly #repo: Repository<AtProtoAppSessionEntity>;
  readonly #retry: TransientRetryOptions | undefined;

  constructor(dataSource: DataSource, options: { retry?: TransientRetryOptions } = {}) {
    this.#repo = dataSource.getRepository(AtProtoAppSessionEntity);
    this.#retry = options.retry;
  }

  async create(record: AppSessionRecord): Promise<void> {
    assertValidDid(record.did);
    assertSessionId(record.id);
    await withTransientRetry(
      'Creating an app session',
      () => this.#repo.insert({ ...record, userAgent: record.userAgent?.slice(0, 512) ?? null }),
      this.#retry,
    );
  }

  async get(id: string): Promise<AppSessionRecord | undefined> {
    if (!SESSION_ID.test(id)) return undefined;
    const row = await withTransientRetry(
      'Reading an app session',
      () => this.#repo.findOne({ where: { id } }),
      this.#retry,
    );
    return row ? toRecord(row) : undefined;
  }

  async touch(id: string, at: Date): Promise<void> {
    assertSessionId(id);
    await withTransientRetry(
      'Updating an app session',
      () => this.#repo.update({ id }, { lastSeenAt: at }),
      this.#retry,
    );
  }

  async revoke(id: string, at: Date): Promise<boolean> {
    assertSessionId(id);
    const result = await withTransientRetry(
      'Revoking an app session',
      () => this.#repo.update({ id, revokedAt: IsNull() }, { revokedAt: at }),
      this.#retry,
    );
    return (result.affected ?? 0) > 0;
  }

  async revokeAllForDid(did: string, at: Date): Promise<number> {
    assertValidDid(did);
    const result = await withTransientRetry(
      'Revoking app sessions',
      () => this.#repo.update({ did, revokedAt: IsNull() }, { revokedAt: at }),
      this.#retry,
    );
    return result.affected ?? 0;
  }

  async listForDid(did: string): Promise<AppSessionRecord[]> {
    assertValidDid(did);
    const rows = await withTransientRetry(
      'Listing app sessions',
      () => this.#repo.find({ where: { did, revokedAt: IsNull() }, order: { createdAt: 'DESC' } }),
      this.#retry,
    );
    return rows.map(toRecord);
  }
}

function assertSessionId(id: string): void {
  if (!SESSION_ID.test(id)) {
    throw new AtProtoStoreError(
      'An app session id is the SHA-256 of its token in lowercase hex (64 characters).',
    );
  }
}

function toRecord(row: AtProtoAppSessionEntity): AppSessionRecord {
  return {
    id: row.id,
    did: row.did,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
    lastSeenAt: row.lastSeenAt,
    revokedAt: row.revokedAt,
    userAgent: row.userAgent,
  };
}
