import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node';
import type { DataSource } from 'typeorm';
import type { Dialect } from './databases.js';

// Helpers for tests that look under the stores: plain SQL against the raw tables, with the
// identifier quoting and parameter syntax of each dialect.

/** Quotes an identifier for `dialect`. */
export function q(dialect: Dialect, id: string): string {
  return dialect === 'mariadb' ? `\`${id}\`` : `"${id}"`;
}

/** The `n`th (1-based) positional parameter for `dialect`. */
export function p(dialect: Dialect, n: number): string {
  return dialect === 'postgres' ? `$${n}` : '?';
}

/**
 * The envelope held by a raw `json` secret column. A driver hands such a column back either
 * parsed (pg, and mysql2 on MariaDB: a JS string `v1.…`) or as its JSON text (better-sqlite3:
 * `"v1.…"` with quotes); an envelope never starts with a quote, so both are recognized.
 */
export function envelopeOf(raw: unknown): string {
  const text = Buffer.isBuffer(raw) ? raw.toString('utf8') : raw;
  if (typeof text !== 'string') throw new TypeError(`not a string column value: ${typeof raw}`);
  return text.startsWith('"') ? (JSON.parse(text) as string) : text;
}

/** Reads one raw secret column of one row, as the envelope string. */
export async function readRawSecret(
  ds: DataSource,
  dialect: Dialect,
  table: 'atproto_oauth_session' | 'atproto_oauth_state' | 'atproto_bot_session',
  column: string,
  key: string,
): Promise<string> {
  const pk = table === 'atproto_oauth_state' ? 'key' : 'did';
  const rows: Array<Record<string, unknown>> = await ds.query(
    `SELECT ${q(dialect, column)} AS ${q(dialect, 'v')} FROM ${q(dialect, table)} WHERE ${q(dialect, pk)} = ${p(dialect, 1)}`,
    [key],
  );
  if (rows.length !== 1)
    throw new Error(`expected one row in ${table} for ${key}, got ${rows.length}`);
  return envelopeOf(rows[0]!.v);
}

/** Overwrites one raw secret column of one row with `envelope` (as a JSON string). */
export async function writeRawSecret(
  ds: DataSource,
  dialect: Dialect,
  table: 'atproto_oauth_session' | 'atproto_oauth_state' | 'atproto_bot_session',
  column: string,
  key: string,
  envelope: string,
): Promise<void> {
  const pk = table === 'atproto_oauth_state' ? 'key' : 'did';
  await ds.query(
    `UPDATE ${q(dialect, table)} SET ${q(dialect, column)} = ${p(dialect, 1)} WHERE ${q(dialect, pk)} = ${p(dialect, 2)}`,
    [JSON.stringify(envelope), key],
  );
}

/** A long random secret with a recognizable prefix. */
export function secret(label: string, bytes = 48): string {
  return `${label}-${randomBytes(bytes).toString('base64url')}`;
}

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';
/** A random did:plc. */
export function randomDid(): string {
  return `did:plc:${Array.from(randomBytes(24), (b) => B32[b % 32]).join('')}`;
}

/** A real P-256 private JWK, as the OAuth client's DPoP keys are. */
export function dpopPrivateJwk(): NodeSavedSession['dpopJwk'] {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `dpop-${randomBytes(4).toString('hex')}`,
  } as NodeSavedSession['dpopJwk'];
}

/** A session value for `did` with the given secrets. */
export function sessionValue(
  did: string,
  s: { accessToken?: string; refreshToken?: string; dpopJwk?: NodeSavedSession['dpopJwk'] } = {},
): NodeSavedSession {
  return {
    dpopJwk: s.dpopJwk ?? dpopPrivateJwk(),
    authMethod: { method: 'private_key_jwt', kid: 'k1' },
    tokenSet: {
      iss: 'https://auth.example.test',
      sub: did as NodeSavedSession['tokenSet']['sub'],
      aud: 'https://pds.example.test',
      scope: 'atproto transition:generic' as NodeSavedSession['tokenSet']['scope'],
      access_token: s.accessToken ?? secret('access'),
      refresh_token: s.refreshToken ?? secret('refresh'),
      token_type: 'DPoP',
      expires_at: new Date(Date.now() + 3_600_000).toISOString(),
    },
  };
}

/** A state value with the given PKCE verifier. */
export function stateValue(
  s: { verifier?: string; dpopJwk?: NodeSavedState['dpopJwk'] } = {},
): NodeSavedState {
  return {
    iss: 'https://auth.example.test',
    dpopJwk: s.dpopJwk ?? dpopPrivateJwk(),
    authMethod: { method: 'private_key_jwt', kid: 'k1' },
    verifier: s.verifier ?? secret('verifier', 64),
    appState: 'return-to:/home',
  };
}
