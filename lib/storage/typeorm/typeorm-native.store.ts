import { type DataSource, type ObjectLiteral, type Repository } from 'typeorm';
import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import type {
  NativeCodeRecord,
  NativeRefreshFamilyRecord,
  NativeTokenStore,
} from '../../native/native-store.interface.js';
import { APP_SESSION_TABLE } from '../entities/app-session.entity.js';
import { AtProtoNativeCodeEntity } from '../entities/native-code.entity.js';
import {
  AtProtoNativeRefreshFamilyEntity,
  NATIVE_REFRESH_FAMILY_TABLE,
} from '../entities/native-refresh-family.entity.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { assertValidDid } from '../validation.js';
import { type BatchCondition, deleteBatch } from './delete-batch.js';
import { onPrimary } from './primary.js';
import { insertOnce, updateOnce } from './retried-write.js';

const HEX_ID = /^[0-9a-f]{64}$/;
const JTI = /^[A-Za-z0-9_-]{16,64}$/;

/**
 * Native one-time codes and refresh-token families on TypeORM (SQLite, PostgreSQL,
 * MySQL/MariaDB).
 *
 * Every state change is one conditional UPDATE, so that two instances acting on one row at
 * once cannot both win: a code is consumed `WHERE id = ? AND used_at IS NULL AND …`, a family
 * rotated `WHERE id = ? AND current_jti = ?`. Reads go to the primary (see `onPrimary`): a
 * lagging replica would show a code as unused, or a rotated token as current, and let it be
 * replayed. Writes are retried after transient failures, and each one answers the same when
 * its first attempt landed before the connection was lost: an insert accepts its own row, a
 * conditional UPDATE that matches nothing on a retry recognizes the values it wrote.
 * Cleanup selects keys, then deletes them in statements of at most 10,000 keys, with the
 * condition repeated.
 * @internal
 */
export class TypeOrmNativeStore implements NativeTokenStore {
  readonly #dataSource: DataSource;
  readonly #codes: Repository<AtProtoNativeCodeEntity>;
  readonly #families: Repository<AtProtoNativeRefreshFamilyEntity>;
  readonly #retry: TransientRetryOptions | undefined;
  readonly #q: (column: string) => string;

  constructor(dataSource: DataSource, options: { retry?: TransientRetryOptions } = {}) {
    this.#dataSource = dataSource;
    this.#codes = dataSource.getRepository(AtProtoNativeCodeEntity);
    this.#families = dataSource.getRepository(AtProtoNativeRefreshFamilyEntity);
    this.#retry = options.retry;
    this.#q = (column) => dataSource.driver.escape(column);
  }

  async createCode(record: NativeCodeRecord): Promise<void> {
    assertHexId(record.id, 'code');
    assertValidDid(record.did);
    await this.#insertOnce(
      'Storing a native login code',
      () => this.#codes.insert({ ...record }),
      async () => {
        const row = await this.#readCode(record.id);
        return (
          row?.did === record.did &&
          row.createdAt.getTime() === record.createdAt.getTime() &&
          row.codeChallenge === record.codeChallenge
        );
      },
    );
  }

  async consumeCode(
    id: string,
    binding: { codeChallenge: string; redirectUri: string },
    at: Date,
  ): Promise<NativeCodeRecord | undefined> {
    if (!HEX_ID.test(id)) return undefined;
    const q = this.#q;
    const consumed = await updateOnce(
      'Consuming a native login code',
      () =>
        this.#codes
          .createQueryBuilder()
          .update()
          .set({ usedAt: at })
          .where(`${q('id')} = :id`, { id })
          .andWhere(`${q('code_challenge')} = :challenge`, { challenge: binding.codeChallenge })
          .andWhere(`${q('redirect_uri')} = :uri`, { uri: binding.redirectUri })
          .andWhere(`${q('used_at')} IS NULL`)
          .andWhere(`${q('expires_at')} > :now`, { now: at.getTime() })
          .execute(),
      // After a lost reply: the first attempt consumed the code if it carries our instant and
      // our binding (a concurrent exchange in the same millisecond with the same verifier is
      // the same client, and it is answered the same way).
      async () => {
        const row = await this.#readCode(id);
        return (
          row?.usedAt?.getTime() === at.getTime() &&
          row.codeChallenge === binding.codeChallenge &&
          row.redirectUri === binding.redirectUri
        );
      },
      this.#retry,
    );
    if (!consumed) return undefined;
    const row = await withTransientRetry(
      'Reading a native login code',
      () => this.#readCode(id),
      this.#retry,
    );
    return row ? toCodeRecord(row) : undefined;
  }

  async hasPendingCode(did: string, now: Date): Promise<boolean> {
    assertValidDid(did);
    const q = this.#q;
    const rows = await withTransientRetry(
      'Looking for a pending native login',
      () =>
        onPrimary(this.#dataSource, (m) =>
          this.#codes
            .createQueryBuilder(undefined, m.queryRunner)
            .select(q('id'), 'id')
            .where(`${q('did')} = :did`, { did })
            .andWhere(`${q('used_at')} IS NULL`)
            .andWhere(`${q('expires_at')} > :now`, { now: now.getTime() })
            .limit(1)
            .getRawMany<{ id: string }>(),
        ),
      this.#retry,
    );
    return rows.length > 0;
  }

  async deleteExpiredCodes(now: number, batchSize: number): Promise<number> {
    const where: BatchCondition = (qb) =>
      qb.where(`${this.#q('expires_at')} < :now`, { now }) as typeof qb;
    return this.#deleteBatch(this.#codes, where, batchSize);
  }

  async createFamily(record: NativeRefreshFamilyRecord): Promise<void> {
    assertHexId(record.id, 'refresh family');
    assertValidDid(record.did);
    assertJti(record.currentJti);
    await this.#insertOnce(
      'Storing a native refresh-token family',
      () => this.#families.insert({ ...record }),
      async () => {
        const row = await this.#readFamily(record.id);
        return (
          row?.did === record.did &&
          row.createdAt.getTime() === record.createdAt.getTime() &&
          row.currentJti === record.currentJti
        );
      },
    );
  }

  async getFamily(id: string): Promise<NativeRefreshFamilyRecord | undefined> {
    if (!HEX_ID.test(id)) return undefined;
    const row = await withTransientRetry(
      'Reading a native refresh-token family',
      () => this.#readFamily(id),
      this.#retry,
    );
    return row ? toFamilyRecord(row) : undefined;
  }

  async rotateFamily(
    id: string,
    presentedJti: string,
    nextJti: string,
    at: Date,
  ): Promise<boolean> {
    assertHexId(id, 'refresh family');
    assertJti(presentedJti);
    assertJti(nextJti);
    const q = this.#q;
    return updateOnce(
      'Rotating a native refresh token',
      // The previous token is set from the parameter, not from `current_jti`: MySQL
      // evaluates SET assignments left to right with the values already assigned, the
      // others with the row's old values. The WHERE makes them equal anyway.
      () =>
        this.#families
          .createQueryBuilder()
          .update()
          .set({ previousJti: presentedJti, currentJti: nextJti, rotatedAt: at })
          .where(`${q('id')} = :id`, { id })
          .andWhere(`${q('current_jti')} = :presented`, { presented: presentedJti })
          .andWhere(`${q('revoked_at')} IS NULL`)
          .execute(),
      // After a lost reply: ours if the row holds the fresh random jti we meant to write.
      async () => (await this.#readFamily(id))?.currentJti === nextJti,
      this.#retry,
    );
  }

  async revokeFamily(id: string, at: Date): Promise<boolean> {
    assertHexId(id, 'refresh family');
    const q = this.#q;
    return updateOnce(
      'Revoking a native refresh-token family',
      () =>
        this.#families
          .createQueryBuilder()
          .update()
          .set({ revokedAt: at })
          .where(`${q('id')} = :id`, { id })
          .andWhere(`${q('revoked_at')} IS NULL`)
          .execute(),
      async () => (await this.#readFamily(id))?.revokedAt?.getTime() === at.getTime(),
      this.#retry,
    );
  }

  async deleteEndedFamilies(
    cutoffs: { now: number; revokedBefore: number },
    batchSize: number,
  ): Promise<number> {
    const q = this.#q;
    // A family whose app session is gone (cleanup deleted it: expired, idle, or revoked
    // past the grace) has ended with it. Families are created after their app session, so
    // a family being created is never taken for an orphan.
    const orphan =
      `NOT EXISTS (SELECT 1 FROM ${q(APP_SESSION_TABLE)} a WHERE a.${q('id')} = ` +
      `${q(NATIVE_REFRESH_FAMILY_TABLE)}.${q('id')})`;
    const where: BatchCondition = (qb) =>
      qb.where(
        `(${q('expires_at')} < :now OR ${q('revoked_at')} < :revokedBefore OR ${orphan})`,
        cutoffs,
      ) as typeof qb;
    return this.#deleteBatch(this.#families, where, batchSize);
  }

  /**
   * An insert retried after transient failures (see {@link insertOnce}); a duplicate key on a
   * retry may be our own row. Ids are SHA-256 of fresh random values, so anything else is not
   * ours.
   */
  async #insertOnce(
    what: string,
    insert: () => Promise<unknown>,
    isOurs: () => Promise<boolean>,
  ): Promise<void> {
    await insertOnce(
      what,
      insert,
      isOurs,
      `${what} failed: a row with this id already exists. Ids derive from fresh random ` +
        'values, so the value was reused or the row was written by someone else.',
      this.#retry,
    );
  }

  /** One cleanup batch (see {@link deleteBatch}); none for a `batchSize` that is not a count. */
  async #deleteBatch<E extends ObjectLiteral>(
    repo: Repository<E>,
    where: BatchCondition,
    batchSize: number,
  ): Promise<number> {
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) return 0;
    const r = await deleteBatch(this.#dataSource, repo, where, batchSize, { retry: this.#retry });
    return r.deleted;
  }

  #readCode(id: string): Promise<AtProtoNativeCodeEntity | null> {
    return onPrimary(this.#dataSource, (m) =>
      m.findOne(AtProtoNativeCodeEntity, { where: { id } }),
    );
  }

  #readFamily(id: string): Promise<AtProtoNativeRefreshFamilyEntity | null> {
    return onPrimary(this.#dataSource, (m) =>
      m.findOne(AtProtoNativeRefreshFamilyEntity, { where: { id } }),
    );
  }
}

function assertHexId(id: string, what: string): void {
  if (!HEX_ID.test(id)) {
    throw new AtProtoStoreError(
      `A native ${what} id is a SHA-256 in lowercase hex (64 characters).`,
    );
  }
}

function assertJti(jti: string): void {
  if (!JTI.test(jti)) {
    throw new AtProtoStoreError('A refresh token jti is 16 to 64 base64url characters.');
  }
}

function toCodeRecord(row: AtProtoNativeCodeEntity): NativeCodeRecord {
  return {
    id: row.id,
    did: row.did,
    redirectUri: row.redirectUri,
    codeChallenge: row.codeChallenge,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
    usedAt: row.usedAt,
  };
}

function toFamilyRecord(row: AtProtoNativeRefreshFamilyEntity): NativeRefreshFamilyRecord {
  return {
    id: row.id,
    did: row.did,
    currentJti: row.currentJti,
    previousJti: row.previousJti,
    rotatedAt: row.rotatedAt,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
    revokedAt: row.revokedAt,
  };
}
