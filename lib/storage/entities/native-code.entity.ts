import { Column, Entity, Index, PrimaryColumn } from 'typeorm';
import { DID_MAX_LENGTH, epochMillis, URL_MAX_LENGTH } from './columns.js';

/** @internal */
export const NATIVE_CODE_TABLE = 'atproto_native_code';

/**
 * A one-time code handed to a native app after its login, exchanged at `POST <prefix>/token`
 * within 60 seconds. Its id is the SHA-256 (hex) of the code, so the table never holds a
 * usable code; the PKCE challenge and the redirect URI it is bound to are not secret.
 * @publicApi
 */
@Entity({ name: NATIVE_CODE_TABLE })
@Index('IDX_atproto_native_code_did', ['did'])
@Index('IDX_atproto_native_code_expires_at', ['expiresAt'])
export class AtProtoNativeCodeEntity {
  /** SHA-256 of the code, lowercase hex. */
  @PrimaryColumn({
    name: 'id',
    type: 'varchar',
    length: 64,
    primaryKeyConstraintName: 'PK_atproto_native_code',
  })
  id!: string;

  /** The DID that signed in. */
  @Column({ name: 'did', type: 'varchar', length: DID_MAX_LENGTH })
  did!: string;

  /** The redirect URI the code was sent to; the token request must name the same. */
  @Column({ name: 'redirect_uri', type: 'varchar', length: URL_MAX_LENGTH })
  redirectUri!: string;

  /** The S256 PKCE challenge (43 base64url characters). */
  @Column({ name: 'code_challenge', type: 'varchar', length: 64 })
  codeChallenge!: string;

  @Column({ name: 'created_at', type: 'bigint', transformer: epochMillis })
  createdAt!: Date;

  /** After this instant the code is refused and cleanup deletes it. */
  @Column({ name: 'expires_at', type: 'bigint', transformer: epochMillis })
  expiresAt!: Date;

  /** When the code was exchanged (it works once), or `null`. */
  @Column({ name: 'used_at', type: 'bigint', nullable: true, transformer: epochMillis })
  usedAt!: Date | null;
}
