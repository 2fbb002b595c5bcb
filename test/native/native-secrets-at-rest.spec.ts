/**
 * What a database dump, a backup or a read-only SQL user sees of native apps' tables holds
 * no usable credential: no one-time code, PKCE verifier, access or refresh token (nor its
 * signature), nor a token secret, in clear, base64, base64url or hex. Codes are stored as
 * their SHA-256; refresh families keep the `jti` only, useless without the secret.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { DataSource } from 'typeorm';
import { DIALECTS, type Dialect } from '../support/databases.js';
import { bytesEncodings, encodings, leaks, type Needle } from '../support/secret-needles.js';
import { twoInstancesOn } from './support/data-sources.js';
import {
  claimsOf,
  nativeInstance,
  nativeOptions,
  signIn,
  tokenPair,
} from './support/native-world.js';

describe.each(DIALECTS)('native secrets at rest on %s', (dialect) => {
  let close: () => Promise<void>;
  let ds: DataSource;
  let sqliteFile: string | undefined;

  beforeAll(async () => {
    const dbs = await twoInstancesOn(dialect, 'native_at_rest');
    close = dbs.close;
    ds = dbs.first;
    sqliteFile =
      dbs.options.type === 'better-sqlite3' ? (dbs.options.database as string) : undefined;
  });
  afterAll(async () => {
    await close?.();
  });

  it('keeps codes, verifiers, tokens and token secrets out of every table', async () => {
    const { options, secret } = await nativeOptions({ storage: 'typeorm' });
    const world = nativeInstance(options, ds);
    // A code still waiting, a code exchanged, a rotation and a grace retry.
    const pending = await signIn(world, options);
    const pair = await tokenPair(world, options);
    const rotated = await world.service.token({
      grant_type: 'refresh_token',
      refresh_token: pair.tokens.refresh_token,
    });
    const retried = await world.service.token({
      grant_type: 'refresh_token',
      refresh_token: pair.tokens.refresh_token,
    });

    const needles: Needle[] = [
      ...encodings('pending code', pending.code),
      ...bytesEncodings('pending code bytes', Buffer.from(pending.code, 'base64url')),
      ...encodings('pending verifier', pending.verifier),
      ...encodings('exchanged code', pair.code),
      ...bytesEncodings('exchanged code bytes', Buffer.from(pair.code, 'base64url')),
      ...encodings('exchanged verifier', pair.verifier),
      ...bytesEncodings('token secret', Buffer.from(secret)),
    ];
    for (const [label, jwt] of [
      ['access token', pair.tokens.access_token],
      ['refresh token', pair.tokens.refresh_token],
      ['rotated access token', rotated.access_token],
      ['rotated refresh token', rotated.refresh_token],
      ['retried access token', retried.access_token],
    ] as const) {
      needles.push(...encodings(label, jwt));
      needles.push(...encodings(`${label} signature`, jwt.split('.')[2]!));
    }

    const dump = await dumpTables(ds, dialect);
    // The dump covers the rows just written (else the check proves nothing).
    expect(dump).toContain(pending.did);
    expect(dump).toContain(pair.did);
    expect(dump).toContain(claimsOf(rotated.refresh_token).jti as string);
    expect(leaks(dump, needles)).toEqual([]);

    if (sqliteFile) {
      // SQLite: the bytes on disk, free pages and journal included.
      for (const file of [sqliteFile, `${sqliteFile}-journal`, `${sqliteFile}-wal`]) {
        if (!existsSync(file)) continue;
        const text = readFileSync(file).toString('latin1');
        if (file === sqliteFile) expect(text).toContain(pair.did);
        expect(leaks(text, needles)).toEqual([]);
      }
    }
  });
});

/**
 * Every row of every table, as the driver returns it and with each column cast to text in
 * SQL, and on PostgreSQL each whole row as text (what pg_dump's COPY prints).
 */
async function dumpTables(ds: DataSource, dialect: Dialect): Promise<string> {
  const q = (id: string) => ds.driver.escape(id);
  const tables = (
    (await ds.query(
      dialect === 'sqlite'
        ? `SELECT name AS name FROM sqlite_master WHERE type = 'table'`
        : dialect === 'postgres'
          ? `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'`
          : `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE()`,
    )) as Array<{ name: string }>
  ).map((t) => t.name);
  expect(tables).toEqual(
    expect.arrayContaining(['atproto_native_code', 'atproto_native_refresh_family']),
  );
  const text = dialect === 'mariadb' ? 'CHAR' : 'TEXT';
  const parts: string[] = [];
  for (const table of tables) {
    const rows: Array<Record<string, unknown>> = await ds.query(`SELECT * FROM ${q(table)}`);
    parts.push(`-- ${table}`, JSON.stringify(rows));
    if (rows.length === 0) continue;
    const casts = Object.keys(rows[0]!).map((c) => `CAST(${q(c)} AS ${text}) AS ${q(c)}`);
    parts.push(JSON.stringify(await ds.query(`SELECT ${casts.join(', ')} FROM ${q(table)}`)));
    if (dialect === 'postgres') {
      parts.push(JSON.stringify(await ds.query(`SELECT t::text AS row FROM ${q(table)} t`)));
    }
  }
  return parts.join('\n');
}
