import { Column, Entity, Index, PrimaryColumn, type ValueTransformer } from 'typeorm';
import { DID_MAX_LENGTH, epochMillis } from './columns.js';

/** @internal */
export const API_KEY_TABLE = 'atproto_api_key';

/**
 * Scopes are stored as a JSON array in a short text column (`null` for a key that is not
 * narrowed): a portable type on SQLite, PostgreSQL and MySQL/MariaDB, never filtered on.
 * @internal
 */
export const scopesJson: ValueTransformer = {
  to: (value: unknown) => (Array.isArray(value) ? JSON.stringify(value) : value),
  from: (value: unknown) => (typeof value === 'string' ? (JSON.parse(value) as string[]) : null),
};

/**
 * An API key of a bot or service. Its id is the SHA-256 (hex) of the key, so the table never
 * contains a usable credential; `display_prefix` holds the configured prefix and the first 8
 * random characters, enough to recognize a key, far too little to use it.
 * @publicApi
 */
@Entity({ name: API_KEY_TABLE })
@Index('IDX_atproto_api_key_did', ['did'])
@Index('IDX_atproto_api_key_expires_at', ['expiresAt'])
@Index('IDX_atproto_api_key_revoked_at', ['revokedAt'])
export class AtProtoApiKeyEntity {
  /** SHA-256 of the key, lowercase hex. */
  @PrimaryColumn({
    name: 'id',
    type: 'varchar',
    length: 64,
    primaryKeyConstraintName: 'PK_atproto_api_key',
  })
  id!: string;

  @Column({ name: 'did', type: 'varchar', length: DID_MAX_LENGTH })
  did!: string;

  @Column({ name: 'name', type: 'varchar', length: 100 })
  name!: string;

  @Column({ name: 'display_prefix', type: 'varchar', length: 32 })
  displayPrefix!: string;

  /** JSON array of scope names, or null when the key is not narrowed. */
  @Column({
    name: 'scopes',
    type: 'varchar',
    length: 2048,
    nullable: true,
    transformer: scopesJson,
  })
  scopes!: string[] | null;

  @Column({ name: 'created_at', type: 'bigint', transformer: epochMillis })
  createdAt!: Date;

  @Column({ name: 'expires_at', type: 'bigint', nullable: true, transformer: epochMillis })
  expiresAt!: Date | null;

  @Column({ name: 'revoked_at', type: 'bigint', nullable: true, transformer: epochMillis })
  revokedAt!: Date | null;

  /** Written at most once per `apiKeys.lastUsedInterval`. */
  @Column({ name: 'last_used_at', type: 'bigint', nullable: true, transformer: epochMillis })
  lastUsedAt!: Date | null;
}
