import { Column, Entity, Index, PrimaryColumn } from 'typeorm';
import { DID_MAX_LENGTH, epochMillis } from './columns.js';

/** @internal */
export const NATIVE_REFRESH_FAMILY_TABLE = 'atproto_native_refresh_family';

/**
 * The refresh tokens of one native sign-in (one app session): which token is current, and
 * its immediate predecessor while the rotation's grace lasts. Tokens are JWTs signed with
 * `native.tokenSecrets`; only their `jti` is kept, which is useless without the secret.
 * @publicApi
 */
@Entity({ name: NATIVE_REFRESH_FAMILY_TABLE })
@Index('IDX_atproto_native_refresh_family_expires_at', ['expiresAt'])
@Index('IDX_atproto_native_refresh_family_revoked_at', ['revokedAt'])
export class AtProtoNativeRefreshFamilyEntity {
  /** The id of the app session the family belongs to (one family per app session). */
  @PrimaryColumn({
    name: 'id',
    type: 'varchar',
    length: 64,
    primaryKeyConstraintName: 'PK_atproto_native_refresh_family',
  })
  id!: string;

  @Column({ name: 'did', type: 'varchar', length: DID_MAX_LENGTH })
  did!: string;

  /** `jti` of the current refresh token. */
  @Column({ name: 'current_jti', type: 'varchar', length: 64 })
  currentJti!: string;

  /** `jti` of the token the current one replaced, or `null` before the first rotation. */
  @Column({ name: 'previous_jti', type: 'varchar', length: 64, nullable: true })
  previousJti!: string | null;

  /** When the current token was issued. */
  @Column({ name: 'rotated_at', type: 'bigint', transformer: epochMillis })
  rotatedAt!: Date;

  @Column({ name: 'created_at', type: 'bigint', transformer: epochMillis })
  createdAt!: Date;

  /** The end of the app session (its absolute lifetime): no refresh token outlives it. */
  @Column({ name: 'expires_at', type: 'bigint', transformer: epochMillis })
  expiresAt!: Date;

  /** When reuse detection (or a revocation) ended the family, or `null`. */
  @Column({ name: 'revoked_at', type: 'bigint', nullable: true, transformer: epochMillis })
  revokedAt!: Date | null;
}
