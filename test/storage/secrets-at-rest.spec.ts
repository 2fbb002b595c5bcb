import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { DataSource } from 'typeorm';
import {
  KeyRing,
  installKeyRing,
  AtProtoDecryptionError,
  atProtoEntities,
  atProtoMigrations,
  TypeOrmSessionStore,
  TypeOrmStateStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase, type Dialect, DIALECTS } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import {
  encodings,
  jwkD,
  jwkDEncodings,
  leaks,
  openEnvelope,
  rawBytesNeedles,
} from '../support/secret-needles.js';
import {
  dpopPrivateJwk,
  p,
  q,
  randomDid,
  readRawSecret,
  secret,
  sessionValue,
  stateValue,
  writeRawSecret,
} from '../support/raw-sql.js';

// What a database dump, a backup or a read-only SQL user sees must not contain a usable
// credential: the stores encrypt tokens, DPoP private keys and PKCE verifiers with the
// documented envelope, bound to their column.

const KEY_ID = 'rest-2026';
const KEY = randomKey();
const ring = new KeyRing({ activeKeyId: KEY_ID, keys: { [KEY_ID]: KEY } });
const KEY_REF = { id: KEY_ID, base64: KEY };
installKeyRing(ring);

const TTL_MS = 3_600_000;

describe.each(DIALECTS)('secrets at rest on %s', (dialect) => {
  let ds: DataSource;
  let drop: () => Promise<void>;
  let sqliteFile: string | undefined;
  let sessions: TypeOrmSessionStore;
  let states: TypeOrmStateStore;

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'secrets_at_rest');
    drop = db.drop;
    sqliteFile = db.options.type === 'better-sqlite3' ? (db.options.database as string) : undefined;
    ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
    });
    await ds.initialize();
    sessions = new TypeOrmSessionStore(ds, { ttlMs: TTL_MS });
    states = new TypeOrmStateStore(ds, { ttlMs: TTL_MS });
  });

  afterAll(async () => {
    installKeyRing(ring);
    await ds?.destroy();
    await drop?.();
  });

  it('keeps tokens, DPoP key and PKCE verifier out of every table, in clear or base64', async () => {
    const did = randomDid();
    const stateKey = randomBytes(16).toString('base64url');
    const accessToken = secret('access', 96);
    const refreshToken = secret('refresh', 64);
    const sessionJwk = dpopPrivateJwk();
    const stateJwk = dpopPrivateJwk();
    const verifier = secret('verifier', 64);
    await sessions.set(did, sessionValue(did, { accessToken, refreshToken, dpopJwk: sessionJwk }));
    await states.set(stateKey, stateValue({ verifier, dpopJwk: stateJwk }));

    const needles = [
      ...encodings('access token', accessToken),
      ...encodings('refresh token', refreshToken),
      ...encodings('PKCE verifier', verifier),
      ...jwkDEncodings('session DPoP d', jwkD(sessionJwk)),
      ...jwkDEncodings('state DPoP d', jwkD(stateJwk)),
    ];

    const dump = await dumpAllTables(ds, dialect);
    // The dump really covers the rows just written (else the check below proves nothing):
    // plain columns are there, and the secret columns hold envelopes.
    expect(dump).toContain(did);
    expect(dump).toContain(stateKey);
    expect(dump).toContain(`v1.${KEY_ID}.`);
    expect(dump).toContain('atproto_oauth_session');
    expect(leaks(dump, needles)).toEqual([]);

    if (sqliteFile) {
      // SQLite: the bytes on disk, including free pages and any journal, not just live rows.
      for (const file of [sqliteFile, `${sqliteFile}-journal`, `${sqliteFile}-wal`]) {
        if (!existsSync(file)) continue;
        const bytes = readFileSync(file);
        const asText = bytes.toString('latin1');
        if (file === sqliteFile) expect(asText).toContain(did);
        expect(leaks(asText, needles)).toEqual([]);
        expect(leaks(asText, rawBytesNeedles('session DPoP d', jwkD(sessionJwk)))).toEqual([]);
        expect(leaks(asText, rawBytesNeedles('state DPoP d', jwkD(stateJwk)))).toEqual([]);
      }
    }
  });

  it('writes the documented envelope: node:crypto alone decrypts every secret column', async () => {
    const did = randomDid();
    const stateKey = randomBytes(16).toString('base64url');
    const session = sessionValue(did);
    const state = stateValue();
    await sessions.set(did, session);
    await states.set(stateKey, state);

    const tokenSet = await readRawSecret(ds, dialect, 'atproto_oauth_session', 'token_set', did);
    expect(tokenSet).toMatch(new RegExp(`^v1\\.${KEY_ID}\\.[A-Za-z0-9_-]{16}\\.[A-Za-z0-9_-]+$`));
    expect(JSON.parse(openEnvelope(tokenSet, 'atproto_oauth_session.token_set', KEY_REF))).toEqual(
      session.tokenSet,
    );
    const dpopKey = await readRawSecret(ds, dialect, 'atproto_oauth_session', 'dpop_key', did);
    expect(JSON.parse(openEnvelope(dpopKey, 'atproto_oauth_session.dpop_key', KEY_REF))).toEqual(
      session.dpopJwk,
    );
    const data = await readRawSecret(ds, dialect, 'atproto_oauth_state', 'data', stateKey);
    expect(JSON.parse(openEnvelope(data, 'atproto_oauth_state.data', KEY_REF))).toEqual(state);
  });

  it('encrypts the same value to a different ciphertext on every write', async () => {
    const did = randomDid();
    const session = sessionValue(did);
    await sessions.set(did, session);
    const first = await readRawSecret(ds, dialect, 'atproto_oauth_session', 'token_set', did);
    await sessions.set(did, session);
    const second = await readRawSecret(ds, dialect, 'atproto_oauth_session', 'token_set', did);

    expect(second).not.toEqual(first);
    expect(second.split('.')[2]).not.toEqual(first.split('.')[2]); // a fresh IV
    const context = 'atproto_oauth_session.token_set';
    expect(openEnvelope(second, context, KEY_REF)).toEqual(openEnvelope(first, context, KEY_REF));
  });

  it('refuses a tampered value with AtProtoDecryptionError that does not reveal the secret', async () => {
    const did = randomDid();
    const accessToken = secret('access', 96);
    const refreshToken = secret('refresh', 64);
    await sessions.set(did, sessionValue(did, { accessToken, refreshToken }));
    const stored = await readRawSecret(ds, dialect, 'atproto_oauth_session', 'token_set', did);
    const tampered = flipByte(stored);
    await writeRawSecret(ds, dialect, 'atproto_oauth_session', 'token_set', did, tampered);

    const error = await sessions.get(did).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoDecryptionError);
    const e = error as AtProtoDecryptionError;
    expect(e).toMatchObject({
      code: 'ERR_AT_PROTO_DECRYPT',
      reason: 'authentication-failed',
      column: 'atproto_oauth_session.token_set',
      keyId: KEY_ID,
    });
    for (const text of [e.message, String(e.stack)]) {
      expect(text).not.toContain(accessToken);
      expect(text).not.toContain(refreshToken);
      expect(text).not.toContain(tampered.split('.')[3]);
    }

    // The same holds for a state.
    const stateKey = randomBytes(16).toString('base64url');
    await states.set(stateKey, stateValue());
    const data = await readRawSecret(ds, dialect, 'atproto_oauth_state', 'data', stateKey);
    await writeRawSecret(ds, dialect, 'atproto_oauth_state', 'data', stateKey, flipByte(data));
    await expect(states.get(stateKey)).rejects.toMatchObject({
      name: 'AtProtoDecryptionError',
      reason: 'authentication-failed',
      column: 'atproto_oauth_state.data',
    });
  });

  it('binds a ciphertext to its column: token_set copied into dpop_key does not decrypt', async () => {
    const did = randomDid();
    await sessions.set(did, sessionValue(did));
    await ds.query(
      `UPDATE ${q(dialect, 'atproto_oauth_session')} SET ${q(dialect, 'dpop_key')} = ${q(dialect, 'token_set')} WHERE ${q(dialect, 'did')} = ${p(dialect, 1)}`,
      [did],
    );
    // The copy is byte-identical, so only the associated data (table.column) can reject it.
    expect(await readRawSecret(ds, dialect, 'atproto_oauth_session', 'dpop_key', did)).toEqual(
      await readRawSecret(ds, dialect, 'atproto_oauth_session', 'token_set', did),
    );
    await expect(sessions.get(did)).rejects.toMatchObject({
      name: 'AtProtoDecryptionError',
      reason: 'authentication-failed',
      column: 'atproto_oauth_session.dpop_key',
      keyId: KEY_ID,
    });
  });

  it('reports unknown-key when the key ring lacks the key id a value was written with', async () => {
    const did = randomDid();
    const session = sessionValue(did);
    await sessions.set(did, session);
    installKeyRing(new KeyRing({ activeKeyId: 'other', keys: { other: randomKey() } }));
    try {
      await expect(sessions.get(did)).rejects.toMatchObject({
        name: 'AtProtoDecryptionError',
        reason: 'unknown-key',
        column: 'atproto_oauth_session.token_set',
        keyId: KEY_ID,
      });
    } finally {
      installKeyRing(ring);
    }
    expect(await sessions.get(did)).toEqual(session);
  });
});

/** The envelope with one ciphertext byte flipped (still a well-formed envelope). */
function flipByte(envelope: string): string {
  const parts = envelope.split('.');
  const body = Buffer.from(parts[3]!, 'base64url');
  body[Math.floor(body.length / 2)]! ^= 0x01;
  parts[3] = body.toString('base64url');
  return parts.join('.');
}

/**
 * Every row of every table of the test database, twice: as the driver returns `SELECT *`,
 * and with each column cast to text in SQL (so json columns are seen as stored, not as
 * the driver parses them).
 */
async function dumpAllTables(ds: DataSource, dialect: Dialect): Promise<string> {
  const tables = (
    (await ds.query(
      dialect === 'sqlite'
        ? `SELECT name AS name FROM sqlite_master WHERE type = 'table'`
        : dialect === 'postgres'
          ? `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'`
          : `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE()`,
    )) as Array<{ name: string }>
  ).map((t) => t.name);
  expect(tables).toEqual(expect.arrayContaining(['atproto_oauth_session', 'atproto_oauth_state']));
  const text = dialect === 'mariadb' ? 'CHAR' : 'TEXT';
  const parts: string[] = [];
  for (const table of tables) {
    const rows: Array<Record<string, unknown>> = await ds.query(
      `SELECT * FROM ${q(dialect, table)}`,
    );
    parts.push(`-- ${table}`, JSON.stringify(rows));
    if (rows.length === 0) continue;
    const casts = Object.keys(rows[0]!).map(
      (c) => `CAST(${q(dialect, c)} AS ${text}) AS ${q(dialect, c)}`,
    );
    parts.push(
      JSON.stringify(await ds.query(`SELECT ${casts.join(', ')} FROM ${q(dialect, table)}`)),
    );
    if (dialect === 'postgres') {
      // A whole row as PostgreSQL prints it (what pg_dump's COPY output looks like).
      parts.push(
        JSON.stringify(await ds.query(`SELECT t::text AS row FROM ${q(dialect, table)} t`)),
      );
    }
  }
  return parts.join('\n');
}
