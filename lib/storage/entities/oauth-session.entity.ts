import { Column, Entity, Index, PrimaryColumn } from 'typeorm';
import { encryptedColumn } from '../../crypto/encrypted-column.transformer.js';
import { DID_MAX_LENGTH, epochMillis, SECRET_COLUMN_TYPE, URL_MAX_LENGTH } from './columns.js';

/** @internal */
export const OAUTH_SESSION_TABLE = 'atproto_oauth_session';

/**
 * The OAuth session of one user (one per DID, as the OAuth client keeps it): the token set
 * and the DPoP private key, both encrypted, plus plain metadata for operations and cleanup.
 * @publicApi
 */
@Entity({ name: OAUTH_SESSION_TABLE })
@Index('IDX_atproto_oauth_session_expires_at', ['expiresAt'])
export class AtProtoOAuthSessionEntity {
  /** The user's DID (case-sensitive; compared byte for byte). */
  @PrimaryColumn({
    name: 'did',
    type: 'varchar',
    length: DID_MAX_LENGTH,
    primaryKeyConstraintName: 'PK_atproto_oauth_session',
  })
  did!: string;

  /** JSON of the token set (access and refresh tokens), encrypted. */
  @Column({
    name: 'token_set',
    type: SECRET_COLUMN_TYPE,
    transformer: encryptedColumn(OAUTH_SESSION_TABLE, 'token_set'),
  })
  tokenSet!: string;

  /** The DPoP private JWK bound to the tokens, encrypted. */
  @Column({
    name: 'dpop_key',
    type: SECRET_COLUMN_TYPE,
    transformer: encryptedColumn(OAUTH_SESSION_TABLE, 'dpop_key'),
  })
  dpopKey!: string;

  /** JSON of the client authentication method, e.g. `{"method":"private_key_jwt","kid":"k1"}`. */
  @Column({ name: 'auth_method', type: 'varchar', length: 255 })
  authMethod!: string;

  /** The authorization server (`iss`). */
  @Column({ name: 'issuer', type: 'varchar', length: URL_MAX_LENGTH })
  issuer!: string;

  /** The user's PDS (the token set's `aud`). */
  @Column({ name: 'pds_url', type: 'varchar', length: URL_MAX_LENGTH })
  pdsUrl!: string;

  /** When the access token expires, if the server said. */
  @Column({ name: 'access_expires_at', type: 'bigint', nullable: true, transformer: epochMillis })
  accessExpiresAt!: Date | null;

  /** End of retention: the last write plus the configured OAuth-session retention. */
  @Column({ name: 'expires_at', type: 'bigint', transformer: epochMillis })
  expiresAt!: Date;

  @Column({ name: 'created_at', type: 'bigint', transformer: epochMillis })
  createdAt!: Date;

  @Column({ name: 'updated_at', type: 'bigint', transformer: epochMillis })
  updatedAt!: Date;

  /** Incremented by every write. */
  @Column({ name: 'version', type: 'int' })
  version!: number;
}
