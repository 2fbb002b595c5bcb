import { type DataSource, IsNull, type Repository } from 'typeorm';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import { AtProtoAppSessionEntity } from '../entities/app-session.entity.js';
import type { AppSessionRecord, AppSessionStore } from '../store.interface.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { assertValidDid } from '../validation.js';
import { onPrimary } from './primary.js';
import { PrimaryKeyRead } from './primary-key-read.js';
import { insertOnce, updateOnce } from './retried-write.js';
import { readRevokedSince } from './revoked-since.js';

const SESSION_ID = /^[0-9a-f]{64}$/;

/**
 * App session store on TypeORM. Reads go to the primary (see `onPrimary`): a revoked
 * session must never be served from a lagging replica.
 *
 * Writes are retried after transient failures, and a lost connection leaves it unknown
 * whether the first attempt landed. Each write is made to give the same answer either way:
 * `touch` is idempotent; `create` accepts the duplicate key of its own retried insert;
 * `revoke` and `revokeAllForDid` count what carries their own timestamp.
 * @publicApi
 */
export class TypeOrmAppSessionStore implements AppSessionStore {
  readonly #dataSource: DataSource;
  readonly #repo: Repository<AtProtoAppSessionEntity>;
  readonly #retry: TransientRetryOptions | undefined;
  readonly #byId: PrimaryKeyRead<AtProtoAppSessionEntity>;

  constructor(dataSource: DataSource, options: { retry?: TransientRetryOptions } = {}) {
    this.#dataSource = dataSource;
    this.#repo = dataSource.getRepository(AtProtoAppSessionEntity);
    this.#retry = options.retry;
    this.#byId = new PrimaryKeyRead(dataSource, AtProtoAppSessionEntity);
  }

  async create(record: AppSessionRecord): Promise<void> {
    assertValidDid(record.did);
    assertSessionId(record.id);
    // A duplicate key on a retry may be our own row: the id is the SHA-256 of a fresh random
    // token, so a row with it, our DID and our creation time is the one we wrote.
    await insertOnce(
      'Creating an app session',
      () =>
        this.#repo.insert({
          ...record,
          userAgent: record.userAgent?.slice(0, 512) ?? null,
        }),
      async () => {
        const stored = await this.#read(record.id);
        return (
          stored?.did === record.did && stored.createdAt.getTime() === record.createdAt.getTime()
        );
      },
      'An app session with this id already exists: ids are the SHA-256 of a fresh random ' +
        'token, so the token was reused or the row was written by someone else.',
      this.#retry,
    );
  }

  async get(id: string): Promise<AppSessionRecord | undefined> {
    if (!SESSION_ID.test(id)) return undefined;
    return withTransientRetry('Reading an app session', () => this.#read(id), this.#retry);
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
    return updateOnce(
      'Revoking an app session',
      () => this.#repo.update({ id, revokedAt: IsNull() }, { revokedAt: at }),
      // After a lost reply: a session revoked at exactly our instant is taken as revoked by us
      // (a concurrent revocation in the same millisecond would be too: it ended the same way).
      async () => (await this.#read(id))?.revokedAt?.getTime() === at.getTime(),
      this.#retry,
    );
  }

  async revokeAllForDid(did: string, at: Date): Promise<number> {
    assertValidDid(did);
    let attempt = 0;
    return withTransientRetry(
      'Revoking app sessions',
      async () => {
        attempt++;
        const result = await this.#repo.update({ did, revokedAt: IsNull() }, { revokedAt: at });
        if (attempt === 1) return result.affected ?? 0;
        // On a retry, the first attempt may have revoked some or all of them: count every
        // session of this DID that carries our instant.
        return onPrimary(this.#dataSource, (m) =>
          m.countBy(AtProtoAppSessionEntity, { did, revokedAt: at }),
        );
      },
      this.#retry,
    );
  }

  async listForDid(did: string): Promise<AppSessionRecord[]> {
    assertValidDid(did);
    const rows = await withTransientRetry(
      'Listing app sessions',
      () =>
        onPrimary(this.#dataSource, (m) =>
          m.find(AtProtoAppSessionEntity, {
            where: { did, revokedAt: IsNull() },
            order: { createdAt: 'DESC' },
          }),
        ),
      this.#retry,
    );
    return rows.map(toRecord);
  }

  async revokedSince(
    since: Date,
    limit: number,
  ): Promise<Array<{ id: string; did: string; revokedAt: Date }>> {
    return readRevokedSince(
      this.#dataSource,
      this.#repo,
      'app sessions',
      since,
      limit,
      this.#retry,
    );
  }

  /**
   * The session with id `id`, on the primary: the read behind every app-session cache miss
   * (the first request of a session on an instance), without TypeORM's entity path (see
   * {@link PrimaryKeyRead}).
   */
  async #read(id: string): Promise<AppSessionRecord | undefined> {
    const row = await this.#byId.get(id);
    return row ? toRecord(row) : undefined;
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
