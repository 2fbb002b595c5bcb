import { Column, Entity, Index, PrimaryColumn } from 'typeorm';
import { encryptedColumn } from '../../crypto/encrypted-column.transformer.js';
import { DID_MAX_LENGTH, epochMillis, SECRET_COLUMN_TYPE, URL_MAX_LENGTH } from './columns.js';

/** @internal */
export const BOT_SESSION_TABLE = 'atproto_bot_session';

/** Longest handle (a DNS name). @internal */
export const HANDLE_MAX_LENGTH = 253;

/**
 * The app-password session of one bot account (one per DID): the access and refresh JWTs
 * `com.atproto.server.createSession` issued, encrypted; never the password. Plain columns
 * say where the account lives and when its tokens expire, for operations and cleanup.
 * @publicApi
 */
@Entity({ name: BOT_SESSION_TABLE })
@Index('IDX_atproto_bot_session_expires_at', ['expiresAt'])
export class AtProtoBotSessionEntity {
  /** The bot's DID (case-sensitive; compared byte for byte). */
  @PrimaryColumn({
    name: 'did',
    type: 'varchar',
    length: DID_MAX_LENGTH,
    primaryKeyConstraintName: 'PK_atproto_bot_session',
  })
  did!: string;

  /** The bot's handle when it logged in or last refreshed. */
  @Column({ name: 'handle', type: 'varchar', length: HANDLE_MAX_LENGTH })
  handle!: string;

  /** The PDS that issued the tokens (where every call and refresh goes). */
  @Column({ name: 'pds_url', type: 'varchar', length: URL_MAX_LENGTH })
  pdsUrl!: string;

  /** JSON of `{ accessJwt, refreshJwt }`, encrypted. */
  @Column({
    name: 'token_set',
    type: SECRET_COLUMN_TYPE,
    transformer: encryptedColumn(BOT_SESSION_TABLE, 'token_set'),
  })
  tokenSet!: string;

  /** When the access JWT expires (its `exp`), if readable. */
  @Column({ name: 'access_expires_at', type: 'bigint', nullable: true, transformer: epochMillis })
  accessExpiresAt!: Date | null;

  /** When the refresh JWT expires (its `exp`): the session ends then. */
  @Column({ name: 'expires_at', type: 'bigint', transformer: epochMillis })
  expiresAt!: Date;

  @Column({ name: 'created_at', type: 'bigint', transformer: epochMillis })
  createdAt!: Date;

  @Column({ name: 'updated_at', type: 'bigint', transformer: epochMillis })
  updatedAt!: Date;

  /** Incremented by every write: fenced writes compare it. */
  @Column({ name: 'version', type: 'int' })
  version!: number;
}
