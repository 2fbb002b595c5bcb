import { Column, Entity, Index, PrimaryColumn } from 'typeorm';
import { encryptedColumn } from '../../crypto/encrypted-column.transformer.js';
import { epochMillis, SECRET_COLUMN_TYPE, STATE_KEY_MAX_LENGTH } from './columns.js';

/** @internal */
export const OAUTH_STATE_TABLE = 'atproto_oauth_state';

/**
 * A pending authorization (between login and callback). `data` holds the PKCE verifier
 * and the DPoP private key, so it is encrypted like a session.
 * @publicApi
 */
@Entity({ name: OAUTH_STATE_TABLE })
@Index('IDX_atproto_oauth_state_expires_at', ['expiresAt'])
export class AtProtoOAuthStateEntity {
  /** The OAuth `state` parameter (case-sensitive; compared byte for byte). */
  @PrimaryColumn({
    name: 'key',
    type: 'varchar',
    length: STATE_KEY_MAX_LENGTH,
    primaryKeyConstraintName: 'PK_atproto_oauth_state',
  })
  key!: string;

  /** JSON of the client's saved state, encrypted. */
  @Column({
    name: 'data',
    type: SECRET_COLUMN_TYPE,
    transformer: encryptedColumn(OAUTH_STATE_TABLE, 'data'),
  })
  data!: string;

  @Column({ name: 'created_at', type: 'bigint', transformer: epochMillis })
  createdAt!: Date;

  /** After this instant the state is ignored and cleanup deletes it. */
  @Column({ name: 'expires_at', type: 'bigint', transformer: epochMillis })
  expiresAt!: Date;
}
