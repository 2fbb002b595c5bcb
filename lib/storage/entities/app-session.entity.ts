import { Column, Entity, Index, PrimaryColumn } from 'typeorm';
import { DID_MAX_LENGTH, epochMillis } from './columns.js';

/** @internal */
export const APP_SESSION_TABLE = 'atproto_app_session';

/**
 * The backend's own login session (a device). Its id is the SHA-256 (hex) of the opaque
 * random token the browser holds, so the table never contains a usable credential.
 * @publicApi
 */
@Entity({ name: APP_SESSION_TABLE })
@Index('IDX_atproto_app_session_did', ['did'])
@Index('IDX_atproto_app_session_expires_at', ['expiresAt'])
@Index('IDX_atproto_app_session_last_seen_at', ['lastSeenAt'])
@Index('IDX_atproto_app_session_revoked_at', ['revokedAt'])
export class AtProtoAppSessionEntity {
  /** SHA-256 of the session token, lowercase hex. */
  @PrimaryColumn({
    name: 'id',
    type: 'varchar',
    length: 64,
    primaryKeyConstraintName: 'PK_atproto_app_session',
  })
  id!: string;

  @Column({ name: 'did', type: 'varchar', length: DID_MAX_LENGTH })
  did!: string;

  @Column({ name: 'created_at', type: 'bigint', transformer: epochMillis })
  createdAt!: Date;

  /** Absolute end of the session. */
  @Column({ name: 'expires_at', type: 'bigint', transformer: epochMillis })
  expiresAt!: Date;

  /** Last request seen (written at most once a minute); the idle timeout counts from it. */
  @Column({ name: 'last_seen_at', type: 'bigint', transformer: epochMillis })
  lastSeenAt!: Date;

  @Column({ name: 'revoked_at', type: 'bigint', nullable: true, transformer: epochMillis })
  revokedAt!: Date | null;

  @Column({ name: 'user_agent', type: 'varchar', length: 512, nullable: true })
  userAgent!: string | null;
}
