import type { NodeSavedSession } from '@atproto/oauth-client-node';
import { type DataSource, type EntityMetadata, type Repository } from 'typeorm';
import { AtProtoOAuthSessionEntity } from '../entities/oauth-session.entity.js';
import type {
  AtProtoOAuthSessionInfo,
  AtProtoSessionInfoStore,
  AtProtoVersionedSessionStore,
  VersionedSession,
} from '../store.interface.js';
import { assertSessionVersion, firstSessionVersion } from '../session-version.js';
import { withTransientRetry } from '../transient-retry.js';
import { assertSessionBelongsTo, assertValidDid } from '../validation.js';
import { onPrimary } from './primary.js';
import { PrimaryKeyRead } from './primary-key-read.js';
import type { TypeOrmStoreOptions } from './typeorm-state.store.js';
import { updateIfVersion } from './update-if-version.js';
import { upsertRow } from './upsert.js';

type ColumnMetadata = EntityMetadata['columns'][number];

/** The plain columns `getInfo` reads: never `token_set` nor `dpop_key`. */
const INFO_COLUMNS = [
  'did',
  'issuer',
  'pdsUrl',
  'accessExpiresAt',
  'expiresAt',
  'createdAt',
  'updatedAt',
] as const satisfies ReadonlyArray<keyof AtProtoOAuthSessionEntity>;

/**
 * OAuth session store on TypeORM: one row per DID, the token set and the DPoP key in
 * separate encrypted columns, issuer / PDS / expiry in plain columns for operations.
 * Writes are upserts and transient failures are retried before an error escapes, because
 * the OAuth client revokes a session it cannot persist. Every write increments the row's
 * `version`, which the fenced writes (`setIfVersion`, `delIfVersion`) compare against.
 * Reads go to the primary (see `onPrimary`): a replica may still hold the refresh token a
 * refresh has just rotated. `getInfo` reads the plain columns only, without decrypting.
 * @publicApi
 */
export class TypeOrmSessionStore implements AtProtoVersionedSessionStore, AtProtoSessionInfoStore {
  readonly #repo: Repository<AtProtoOAuthSessionEntity>;
  readonly #options: TypeOrmStoreOptions;
  readonly #now: () => number;
  readonly #q: (column: string) => string;
  readonly #byDid: PrimaryKeyRead<AtProtoOAuthSessionEntity>;
  readonly #dataSource: DataSource;
  #infoStatement: { sql: string; columns: readonly ColumnMetadata[] } | undefined;

  constructor(dataSource: DataSource, options: TypeOrmStoreOptions) {
    this.#dataSource = dataSource;
    this.#repo = dataSource.getRepository(AtProtoOAuthSessionEntity);
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#q = (column) => dataSource.driver.escape(column);
    this.#byDid = new PrimaryKeyRead(dataSource, AtProtoOAuthSessionEntity);
  }

  async get(did: string): Promise<NodeSavedSession | undefined> {
    return (await this.getVersioned(did))?.value;
  }

  async getVersioned(did: string): Promise<VersionedSession | undefined> {
    assertValidDid(did);
    const row = await withTransientRetry(
      'Reading an OAuth session',
      () => this.#read(did),
      this.#options.retry,
    );
    if (!row || row.expiresAt.getTime() <= this.#now()) return undefined;
    const tokenSet = JSON.parse(row.tokenSet) as NodeSavedSession['tokenSet'];
    assertSessionBelongsTo(did, tokenSet.sub);
    return {
      value: {
        tokenSet,
        dpopJwk: JSON.parse(row.dpopKey) as NodeSavedSession['dpopJwk'],
        authMethod: JSON.parse(row.authMethod) as NodeSavedSession['authMethod'],
      },
      version: Number(row.version),
      updatedAt: row.updatedAt,
    };
  }

  /**
   * The plain columns of the session of `did`, by one statement on the primary that selects
   * no encrypted column, so nothing is decrypted (and the key ring is not needed).
   */
  async getInfo(did: string): Promise<AtProtoOAuthSessionInfo | undefined> {
    assertValidDid(did);
    const { sql, columns } = (this.#infoStatement ??= this.#buildInfoStatement());
    const rows = await withTransientRetry(
      'Reading an OAuth session',
      () => onPrimary(this.#dataSource, (m) => m.query<Array<Record<string, unknown>>>(sql, [did])),
      this.#options.retry,
    );
    const row = rows[0];
    if (row === undefined) return undefined;
    // The driver's own hydration, as PrimaryKeyRead does: bigint instants through epochMillis.
    const driver = this.#dataSource.driver;
    const value = (c: ColumnMetadata) => driver.prepareHydratedValue(row[c.propertyName], c);
    const info = Object.fromEntries(columns.map((c) => [c.propertyName, value(c)])) as Pick<
      AtProtoOAuthSessionEntity,
      (typeof INFO_COLUMNS)[number]
    >;
    return info.expiresAt.getTime() <= this.#now() ? undefined : info;
  }

  async set(did: string, value: NodeSavedSession): Promise<void> {
    assertValidDid(did);
    assertSessionBelongsTo(did, value.tokenSet?.sub);
    const now = this.#now();
    await withTransientRetry(
      'Saving an OAuth session',
      () =>
        upsertRow(
          this.#repo,
          { did },
          { ...this.#columns(value, now), version: this.#increment },
          { createdAt: new Date(now), version: firstSessionVersion(now) },
        ),
      this.#options.retry,
    );
  }

  async setIfVersion(
    did: string,
    value: NodeSavedSession,
    version: number,
  ): Promise<number | undefined> {
    assertValidDid(did);
    assertSessionBelongsTo(did, value.tokenSet?.sub);
    assertSessionVersion(version);
    const now = this.#now();
    // A session deleted meanwhile (logout, revocation, cleanup) stays deleted; an expired row
    // counts as gone, as on read. After a lost reply the write is ours if the row holds our
    // token set (a fresh refresh token) and DPoP key. The bot store's setIfVersion is the same
    // function, without the expiry condition (see there).
    return updateIfVersion(this.#repo, {
      what: 'Saving an OAuth session',
      where: { did },
      version,
      columns: this.#columns(value, now),
      increment: this.#increment,
      ours: ['tokenSet', 'dpopKey'],
      liveAt: now,
      read: () => this.#read(did),
      retry: this.#options.retry,
    });
  }

  async del(did: string): Promise<void> {
    assertValidDid(did);
    await withTransientRetry(
      'Deleting an OAuth session',
      () => this.#repo.delete({ did }),
      this.#options.retry,
    );
  }

  async delIfVersion(did: string, version: number): Promise<boolean> {
    assertValidDid(did);
    assertSessionVersion(version);
    let attempt = 0;
    return withTransientRetry(
      'Deleting an OAuth session',
      async () => {
        attempt++;
        const result = await this.#repo.delete({ did, version });
        if ((result.affected ?? 0) > 0) return true;
        // A first attempt that deleted nothing resolves false even when the row is gone: this
        // resolves whether it deleted (AtProtoVersionedSessionStore). The bot store's
        // delIfVersion differs on purpose: there a row already gone counts as done.
        if (attempt === 1) return false;
        // Nothing deleted on a retry: the first attempt may have landed before its connection
        // was lost. If the row is gone, the version we meant to delete is gone, by our first
        // attempt or by another deleter; either way no newer session was removed. If a row
        // is there, it is a newer write (or a new login), which we must leave alone.
        return (await this.#read(did)) === null;
      },
      this.#options.retry,
    );
  }

  /** `version = version + 1`, as raw SQL for the query builder. */
  readonly #increment = () => `${this.#q('version')} + 1`;

  /** The columns a write sets from `value` at `now` (all but `version` and `created_at`). */
  #columns(value: NodeSavedSession, now: number) {
    const { tokenSet } = value;
    return {
      tokenSet: JSON.stringify(tokenSet),
      dpopKey: JSON.stringify(value.dpopJwk),
      authMethod: JSON.stringify(value.authMethod),
      issuer: tokenSet.iss,
      pdsUrl: tokenSet.aud,
      accessExpiresAt: tokenSet.expires_at ? new Date(tokenSet.expires_at) : null,
      expiresAt: new Date(now + this.#options.ttlMs),
      updatedAt: new Date(now),
    };
  }

  /** `SELECT <INFO_COLUMNS> FROM atproto_oauth_session WHERE did = ?`, built on first use. */
  #buildInfoStatement(): { sql: string; columns: readonly ColumnMetadata[] } {
    const metadata = this.#dataSource.getMetadata(AtProtoOAuthSessionEntity);
    const columns = INFO_COLUMNS.map((p) => metadata.findColumnWithPropertyName(p)!);
    const column = (c: ColumnMetadata) => `${this.#q('s')}.${this.#q(c.databaseName)}`;
    const [first, ...rest] = columns;
    const qb = this.#dataSource
      .createQueryBuilder()
      .from(AtProtoOAuthSessionEntity, 's')
      .select(column(first!), first!.propertyName);
    for (const c of rest) qb.addSelect(column(c), c.propertyName);
    const [sql] = qb
      .where(`${column(metadata.findColumnWithPropertyName('did')!)} = :did`, { did: '' })
      .getQueryAndParameters();
    return { sql, columns };
  }

  /**
   * The row of `did` on the primary, decrypted: the read behind every restore, without
   * TypeORM's entity path (see {@link PrimaryKeyRead}).
   */
  async #read(did: string): Promise<AtProtoOAuthSessionEntity | null> {
    return (await this.#byDid.get(did)) ?? null;
  }
}
