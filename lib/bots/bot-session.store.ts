import type { DataSource, Repository } from 'typeorm';
import { AtProtoBotSessionEntity } from '../storage/entities/bot-session.entity.js';
import { assertSessionVersion, firstSessionVersion } from '../storage/session-version.js';
import { type TransientRetryOptions, withTransientRetry } from '../storage/transient-retry.js';
import { onPrimary } from '../storage/typeorm/primary.js';
import { updateIfVersion } from '../storage/typeorm/update-if-version.js';
import { upsertRow } from '../storage/typeorm/upsert.js';
import { assertValidDid } from '../storage/validation.js';

/**
 * A bot's stored session: what `createSession` / `refreshSession` answered, and where.
 * @internal
 */
export interface StoredBotSession {
  readonly did: string;
  readonly handle: string;
  /** The PDS origin every call and refresh goes to. */
  readonly pdsUrl: string;
  readonly accessJwt: string;
  readonly refreshJwt: string;
  /** Epoch ms of the access JWT's `exp`, or null when unreadable. */
  readonly accessExpiresAt: number | null;
  /** Epoch ms of the refresh JWT's `exp`: the row is gone after it. */
  readonly expiresAt: number;
}

/** @internal */
export interface VersionedBotSession {
  readonly value: StoredBotSession;
  readonly version: number;
}

/**
 * Where bot sessions are kept. Reads see the last write (the primary); `setIfVersion` and
 * `delIfVersion` apply only if the row is still at the version read, so that a holder of
 * the bot's lock that lost it (a stalled process) cannot overwrite or delete a newer session.
 * @internal
 */
export interface BotSessionStore {
  get(did: string): Promise<VersionedBotSession | undefined>;
  /** Writes a new session (a login), whatever was stored. */
  set(value: StoredBotSession): Promise<void>;
  /**
   * Replaces the session at `version`, even one whose expiry has passed since it was read (a
   * refresh the PDS accepted); never inserts. The new version, or `undefined` when fenced
   * out (a newer write, or the row deleted).
   */
  setIfVersion(value: StoredBotSession, version: number): Promise<number | undefined>;
  /** Deletes the session at `version`; false when fenced out (a newer one is kept). */
  delIfVersion(did: string, version: number): Promise<boolean>;
  /**
   * Deletes the session of `did` if its refresh JWT has expired; whether one was deleted
   * (so that its end is reported once).
   */
  deleteExpired(did: string): Promise<boolean>;
  /** DIDs whose session's refresh JWT expired at or before `now`, at most `limit` (cleanup). */
  listExpired(now: number, limit: number): Promise<string[]>;
}

/** Bot sessions in memory (`storage: 'memory'`): one process, lost on restart. @internal */
export class MemoryBotSessionStore implements BotSessionStore {
  readonly #rows = new Map<string, VersionedBotSession>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  async get(did: string): Promise<VersionedBotSession | undefined> {
    const row = this.#rows.get(did);
    return row && row.value.expiresAt > this.#now() ? row : undefined;
  }

  async set(value: StoredBotSession): Promise<void> {
    assertValidDid(value.did);
    const version = firstSessionVersion(this.#now());
    const current = this.#rows.get(value.did)?.version ?? 0;
    this.#rows.set(value.did, { value, version: Math.max(version, current + 1) });
  }

  async setIfVersion(value: StoredBotSession, version: number): Promise<number | undefined> {
    assertSessionVersion(version);
    // Not through get(): a row whose refresh JWT has expired since it was read is still
    // written at its version, as in TypeOrmBotSessionStore (see there).
    const row = this.#rows.get(value.did);
    if (row?.version !== version) return undefined;
    this.#rows.set(value.did, { value, version: version + 1 });
    return version + 1;
  }

  async listExpired(now: number, limit: number): Promise<string[]> {
    const dids: string[] = [];
    for (const [did, row] of this.#rows) {
      if (dids.length >= limit) break;
      if (row.value.expiresAt <= now) dids.push(did);
    }
    return dids;
  }

  async deleteExpired(did: string): Promise<boolean> {
    const row = this.#rows.get(did);
    if (!row || row.value.expiresAt > this.#now()) return false;
    return this.#rows.delete(did);
  }

  async delIfVersion(did: string, version: number): Promise<boolean> {
    assertSessionVersion(version);
    const row = this.#rows.get(did);
    if (!row) return true;
    if (row.version !== version) return false;
    this.#rows.delete(did);
    return true;
  }
}

/**
 * Bot sessions on the app's TypeORM DataSource (`atproto_bot_session`): the JWTs in one
 * encrypted column, transient failures retried, reads on the primary (a replica may still
 * hold a refresh JWT that a refresh has just rotated).
 * @internal
 */
export class TypeOrmBotSessionStore implements BotSessionStore {
  readonly #dataSource: DataSource;
  readonly #repo: Repository<AtProtoBotSessionEntity>;
  readonly #retry: TransientRetryOptions | undefined;
  readonly #now: () => number;
  readonly #q: (column: string) => string;

  constructor(
    dataSource: DataSource,
    options: { retry?: TransientRetryOptions; now?: () => number } = {},
  ) {
    this.#dataSource = dataSource;
    this.#repo = dataSource.getRepository(AtProtoBotSessionEntity);
    this.#retry = options.retry;
    this.#now = options.now ?? Date.now;
    this.#q = (column) => dataSource.driver.escape(column);
  }

  async get(did: string): Promise<VersionedBotSession | undefined> {
    assertValidDid(did);
    const row = await withTransientRetry(
      'Reading a bot session',
      () => this.#read(did),
      this.#retry,
    );
    if (!row || row.expiresAt.getTime() <= this.#now()) return undefined;
    const tokens = JSON.parse(row.tokenSet) as { accessJwt: string; refreshJwt: string };
    return {
      value: {
        did: row.did,
        handle: row.handle,
        pdsUrl: row.pdsUrl,
        accessJwt: tokens.accessJwt,
        refreshJwt: tokens.refreshJwt,
        accessExpiresAt: row.accessExpiresAt ? row.accessExpiresAt.getTime() : null,
        expiresAt: row.expiresAt.getTime(),
      },
      version: Number(row.version),
    };
  }

  async set(value: StoredBotSession): Promise<void> {
    assertValidDid(value.did);
    const now = this.#now();
    await withTransientRetry(
      'Saving a bot session',
      () =>
        upsertRow(
          this.#repo,
          { did: value.did },
          { ...this.#columns(value, now), version: this.#increment },
          { createdAt: new Date(now), version: firstSessionVersion(now) },
        ),
      this.#retry,
    );
  }

  async setIfVersion(value: StoredBotSession, version: number): Promise<number | undefined> {
    assertValidDid(value.did);
    assertSessionVersion(version);
    // The OAuth session store's fenced write: a session deleted meanwhile stays deleted, and
    // after a lost reply the write is ours if the row holds our JWTs. Unlike there, a row whose
    // expiry has passed is still written at its version. Its expiry is the refresh JWT's `exp`,
    // and this write is the PDS's answer to a refresh sent with that JWT while the row was
    // live (get() hides expired rows): the PDS accepted it, so the session did not end, and
    // refusing would drop the new JWTs (the old refresh JWT is spent) and make the bot log in
    // again with its password. The OAuth store's expiry is its own retention instead, which a
    // Redis key expires by itself: an expired OAuth row is gone. A row deleted meanwhile (its
    // end reported, by cleanup or its next use) is not brought back: the write never inserts.
    return updateIfVersion(this.#repo, {
      what: 'Saving a bot session',
      where: { did: value.did },
      version,
      columns: this.#columns(value, this.#now()),
      increment: this.#increment,
      ours: ['tokenSet'],
      read: () => this.#read(value.did),
      retry: this.#retry,
    });
  }

  async delIfVersion(did: string, version: number): Promise<boolean> {
    assertValidDid(did);
    assertSessionVersion(version);
    return withTransientRetry(
      'Deleting a bot session',
      async () => {
        const result = await this.#repo.delete({ did, version });
        if ((result.affected ?? 0) > 0) return true;
        // Not the OAuth session store's delIfVersion, on purpose: that one resolves whether it
        // deleted (a row already gone is false on a first attempt), this one whether no newer
        // session was removed (BotSessionStore.delIfVersion, as MemoryBotSessionStore does).
        // Nothing deleted: if the row is gone (deleted by another holder, or by a first
        // attempt whose answer was lost), no newer session was removed; a row that is there
        // is a newer write, which must stay.
        return (await this.#read(did)) === null;
      },
      this.#retry,
    );
  }

  async deleteExpired(did: string): Promise<boolean> {
    assertValidDid(did);
    const now = this.#now();
    // Read first: a retried DELETE below cannot tell its own deletion from a row that was
    // never there, so it is only sent for a row that is there and expired.
    const row = await withTransientRetry(
      'Reading a bot session',
      () => this.#read(did),
      this.#retry,
    );
    if (!row || row.expiresAt.getTime() > now) return false;
    let attempt = 0;
    return withTransientRetry(
      'Deleting an expired bot session',
      async () => {
        attempt++;
        const result = await this.#repo
          .createQueryBuilder()
          .delete()
          .where({ did })
          .andWhere(`${this.#q('expires_at')} <= :now`, { now })
          .execute();
        if ((result.affected ?? 0) > 0) return true;
        if (attempt === 1) return false;
        // Nothing deleted on a retry: the first attempt may have deleted the row before its
        // reply was lost. If the row is gone, it did (or another deleter did in that instant,
        // and the end is reported twice rather than never); a row that is there was renewed
        // meanwhile (a login or a refresh) and stays.
        return (await this.#read(did)) === null;
      },
      this.#retry,
    );
  }

  async listExpired(now: number, limit: number): Promise<string[]> {
    // On the primary, through the expires_at index.
    const rows = await withTransientRetry(
      'Listing expired bot sessions',
      () =>
        onPrimary(this.#dataSource, (manager) =>
          manager
            .getRepository(AtProtoBotSessionEntity)
            .createQueryBuilder('b')
            .select('b.did', 'did')
            .where(`b.${this.#q('expires_at')} <= :now`, { now })
            .orderBy(`b.${this.#q('expires_at')}`)
            .limit(limit)
            .getRawMany<{ did: string }>(),
        ),
      this.#retry,
    );
    return rows.map((r) => r.did);
  }

  /** `version = version + 1`, as raw SQL for the query builder. */
  readonly #increment = () => `${this.#q('version')} + 1`;

  #columns(value: StoredBotSession, now: number) {
    return {
      handle: value.handle,
      pdsUrl: value.pdsUrl,
      tokenSet: JSON.stringify({ accessJwt: value.accessJwt, refreshJwt: value.refreshJwt }),
      accessExpiresAt: value.accessExpiresAt === null ? null : new Date(value.accessExpiresAt),
      expiresAt: new Date(value.expiresAt),
      updatedAt: new Date(now),
    };
  }

  #read(did: string): Promise<AtProtoBotSessionEntity | null> {
    return onPrimary(this.#dataSource, (manager) =>
      manager.findOne(AtProtoBotSessionEntity, { where: { did } }),
    );
  }
}
