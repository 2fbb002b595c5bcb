import { randomBytes } from 'node:crypto';
import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node';
import { DataSource } from 'typeorm';
import {
  KeyRing,
  installKeyRing,
  AtProtoConfigError,
  AtProtoKeyRingUnavailableError,
  atProtoEntities,
  reencrypt,
  type ReencryptProgress,
  atProtoMigrations,
  TypeOrmSessionStore,
  TypeOrmStateStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase, type Dialect, DIALECTS } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import {
  envelopeOf,
  q,
  randomDid,
  readRawSecret,
  sessionValue,
  stateValue,
  writeRawSecret,
} from '../support/raw-sql.js';
import { TypeOrmBotSessionStore } from '../../lib/bots/bot-session.store.js';

const KEYS = { old: randomKey(), new: randomKey(), newer: randomKey() };
const oldRing = new KeyRing({ activeKeyId: 'old', keys: { old: KEYS.old } });
const rotating = new KeyRing({ activeKeyId: 'new', keys: { old: KEYS.old, new: KEYS.new } });
const newOnly = new KeyRing({ activeKeyId: 'new', keys: { new: KEYS.new } });

const SESSION = 'atproto_oauth_session';
const STATE = 'atproto_oauth_state';
const BOT = 'atproto_bot_session';

describe.each(DIALECTS)('reencrypt() on %s', (dialect) => {
  let ds: DataSource;
  let drop: () => Promise<void>;
  let sessions: TypeOrmSessionStore;
  let states: TypeOrmStateStore;
  // Every call moves the clock, so two writes of one row never share a timestamp.
  let clock = Date.now();
  const now = () => ++clock;
  const written = {
    sessions: new Map<string, NodeSavedSession>(),
    states: new Map<string, NodeSavedState>(),
  };
  let corruptDid: string;

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'reencrypt');
    drop = db.drop;
    ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
    });
    await ds.initialize();
    sessions = new TypeOrmSessionStore(ds, { ttlMs: 3_600_000, now });
    states = new TypeOrmStateStore(ds, { ttlMs: 3_600_000, now });
  });

  afterAll(async () => {
    await ds?.destroy();
    await drop?.();
  });

  it('rewrites every value under the active key in batches, reports a corrupted row and leaves it alone', async () => {
    installKeyRing(oldRing);
    for (let i = 0; i < 7; i++) {
      const did = randomDid();
      written.sessions.set(did, sessionValue(did));
      await sessions.set(did, written.sessions.get(did)!);
    }
    for (let i = 0; i < 5; i++) {
      const key = randomBytes(16).toString('base64url');
      written.states.set(key, stateValue());
      await states.set(key, written.states.get(key)!);
    }
    corruptDid = randomDid();
    await sessions.set(corruptDid, sessionValue(corruptDid));
    const damaged = flipByte(await readRawSecret(ds, dialect, SESSION, 'token_set', corruptDid));
    await writeRawSecret(ds, dialect, SESSION, 'token_set', corruptDid, damaged);
    const before = await rawSessions(ds, dialect);
    expect(before).toHaveLength(8);
    for (const row of before)
      expect([row.token_set, row.dpop_key]).toEqual([
        expect.stringMatching(/^v1\.old\./),
        expect.stringMatching(/^v1\.old\./),
      ]);

    installKeyRing(rotating);
    const progress: ReencryptProgress[] = [];
    const result = await reencrypt(ds, { batchSize: 2, onProgress: (p) => progress.push(p) });

    expect(result).toEqual({
      activeKeyId: 'new',
      tables: {
        [STATE]: { scanned: 5, rewritten: 5, failed: 0, skipped: 0 },
        [SESSION]: { scanned: 8, rewritten: 7, failed: 1, skipped: 0 },
        [BOT]: { scanned: 0, rewritten: 0, failed: 0, skipped: 0 },
      },
      failures: [
        {
          table: SESSION,
          key: corruptDid,
          column: `${SESSION}.token_set`,
          keyId: 'old',
          reason: 'authentication-failed',
        },
      ],
    });
    // Batches of at most 2 rows, progress reported after each, ending at the totals.
    for (const table of [STATE, SESSION] as const) {
      const steps = progress.filter((p) => p.table === table).map((p) => p.scanned);
      expect(steps).toEqual(table === STATE ? [2, 4, 5] : [2, 4, 6, 8]);
    }
    expect(progress.at(-1)).toEqual({ table: SESSION, ...result.tables[SESSION] });

    // Raw rows: every good value is now under "new" and nothing else changed, the version
    // included (a refresh that read the session just before still writes it: see below);
    // the corrupted row is byte for byte what it was.
    const after = await rawSessions(ds, dialect);
    for (const row of after) {
      const old = before.find((b) => b.did === row.did)!;
      if (row.did === corruptDid) {
        expect(row).toEqual(old);
        continue;
      }
      expect(row.token_set).toMatch(/^v1\.new\./);
      expect(row.dpop_key).toMatch(/^v1\.new\./);
      expect(row).toEqual({
        ...old,
        token_set: row.token_set,
        dpop_key: row.dpop_key,
      });
    }
    for (const key of written.states.keys()) {
      expect(await readRawSecret(ds, dialect, STATE, 'data', key)).toMatch(/^v1\.new\./);
    }
    // Every value reads back identically through the stores.
    for (const [did, value] of written.sessions) expect(await sessions.get(did)).toEqual(value);
    for (const [key, value] of written.states) expect(await states.get(key)).toEqual(value);

    // A second run has nothing left to do (and still reports the damaged value).
    const again = await reencrypt(ds, { batchSize: 2 });
    expect(again.tables).toEqual({
      [STATE]: { scanned: 5, rewritten: 0, failed: 0, skipped: 0 },
      [SESSION]: { scanned: 8, rewritten: 0, failed: 1, skipped: 0 },
      [BOT]: { scanned: 0, rewritten: 0, failed: 0, skipped: 0 },
    });
    expect(await rawSessions(ds, dialect)).toEqual(after);

    // The old key can go: a ring with only "new" reads everything that was rewritten.
    installKeyRing(newOnly);
    for (const [did, value] of written.sessions) expect(await sessions.get(did)).toEqual(value);
    for (const [key, value] of written.states) expect(await states.get(key)).toEqual(value);
    await expect(sessions.get(corruptDid)).rejects.toMatchObject({
      reason: 'unknown-key',
      keyId: 'old',
    });
  });

  it("rewrites bot sessions' tokens too, so that the old key can be removed", async () => {
    installKeyRing(oldRing);
    const bots = new TypeOrmBotSessionStore(ds);
    const did = randomDid();
    const bot = {
      did,
      handle: 'bot.example.test',
      pdsUrl: 'https://pds.example.test',
      accessJwt: `access-${randomBytes(8).toString('hex')}`,
      refreshJwt: `refresh-${randomBytes(8).toString('hex')}`,
      accessExpiresAt: Date.now() + 3_600_000,
      expiresAt: Date.now() + 86_400_000,
    };
    await bots.set(bot);
    expect(await readRawSecret(ds, dialect, BOT, 'token_set', did)).toMatch(/^v1\.old\./);
    installKeyRing(rotating);
    const result = await reencrypt(ds);
    expect(result.tables[BOT]).toMatchObject({ rewritten: 1, failed: 0 });
    expect(await readRawSecret(ds, dialect, BOT, 'token_set', did)).toMatch(/^v1\.new\./);
    installKeyRing(newOnly);
    expect((await bots.get(did))?.value).toEqual(bot);
  });

  it('does not fence out a refresh that read the session just before the rewrite', async () => {
    installKeyRing(oldRing);
    const did = randomDid();
    await sessions.set(did, sessionValue(did));
    const read = await sessions.getVersioned(did); // a refresh reads under the session lock...
    installKeyRing(rotating);
    await reencrypt(ds, { batchSize: 100 }); // ...the rotation rewrites the row meanwhile...
    const refreshed = sessionValue(did);
    // ...and the refresh's write of the rotated tokens still lands.
    expect(await sessions.setIfVersion(did, refreshed, read!.version)).toBeDefined();
    expect((await sessions.get(did))?.tokenSet).toEqual(refreshed.tokenSet);
  });

  it('never overwrites a row another writer changed after it was read', async () => {
    installKeyRing(oldRing);
    const did = randomDid();
    const stateKey = randomBytes(16).toString('base64url');
    await sessions.set(did, sessionValue(did));
    await states.set(stateKey, stateValue());
    installKeyRing(rotating);

    // The other writer (e.g. a token refresh) strikes between reencrypt's read of a batch
    // and its write-back: wrap the DataSource so that it runs right after each read.
    const concurrentSession = sessionValue(did);
    const concurrentState = stateValue();
    const racing = Object.create(ds) as DataSource;
    racing.query = (async (sql: string, parameters?: unknown[]) => {
      const rows: unknown = await ds.query(sql, parameters);
      if (/^SELECT/i.test(sql) && JSON.stringify(rows).includes(did)) {
        await sessions.set(did, concurrentSession);
      }
      if (/^SELECT/i.test(sql) && JSON.stringify(rows).includes(stateKey)) {
        await states.set(stateKey, concurrentState);
      }
      return rows;
    }) as DataSource['query'];

    const result = await reencrypt(racing);
    expect(result.tables[SESSION].skipped).toBe(1);
    expect(result.tables[STATE].skipped).toBe(1);
    expect(await sessions.get(did)).toEqual(concurrentSession);
    expect(await states.get(stateKey)).toEqual(concurrentState);
  });

  it('uses options.keyRing rather than the installed ring', async () => {
    installKeyRing(newOnly);
    const next = new KeyRing({ activeKeyId: 'newer', keys: { new: KEYS.new, newer: KEYS.newer } });
    const result = await reencrypt(ds, { keyRing: next, batchSize: 3 });
    expect(result.activeKeyId).toBe('newer');
    // Both values of the corrupted row are under "old", which this ring does not have.
    expect(result.failures).toEqual(
      ['token_set', 'dpop_key'].map((column) => ({
        table: SESSION,
        key: corruptDid,
        column: `${SESSION}.${column}`,
        keyId: 'old',
        reason: 'unknown-key',
      })),
    );
    for (const row of await rawSessions(ds, dialect)) {
      if (row.did !== corruptDid) expect(row.token_set).toMatch(/^v1\.newer\./);
    }
    installKeyRing(new KeyRing({ activeKeyId: 'newer', keys: { newer: KEYS.newer } }));
    for (const [did, value] of written.sessions) expect(await sessions.get(did)).toEqual(value);
    for (const [key, value] of written.states) expect(await states.get(key)).toEqual(value);
  });
});

describe('reencrypt() preconditions', () => {
  const ds = new DataSource({ type: 'better-sqlite3', database: ':memory:' });

  it('refuses to run without a key ring, an invalid batch size, or an uninitialized DataSource', async () => {
    installKeyRing(undefined as unknown as KeyRing);
    await expect(reencrypt(ds)).rejects.toBeInstanceOf(AtProtoKeyRingUnavailableError);
    await expect(reencrypt(ds, { keyRing: rotating, batchSize: 0 })).rejects.toBeInstanceOf(
      AtProtoConfigError,
    );
    await expect(reencrypt(ds, { keyRing: rotating })).rejects.toThrow(/not initialized/);
  });
});

interface RawSession {
  did: string;
  token_set: string;
  dpop_key: string;
  version: number;
  updated_at: string;
  expires_at: string;
}

async function rawSessions(ds: DataSource, dialect: Dialect): Promise<RawSession[]> {
  const cols = ['did', 'token_set', 'dpop_key', 'version', 'updated_at', 'expires_at'];
  const rows: Array<Record<string, unknown>> = await ds.query(
    `SELECT ${cols.map((c) => q(dialect, c)).join(', ')} FROM ${q(dialect, SESSION)} ORDER BY ${q(dialect, 'did')}`,
  );
  return rows.map((r) => ({
    did: String(r.did),
    token_set: envelopeOf(r.token_set),
    dpop_key: envelopeOf(r.dpop_key),
    version: Number(r.version),
    updated_at: String(r.updated_at),
    expires_at: String(r.expires_at),
  }));
}

function flipByte(envelope: string): string {
  const parts = envelope.split('.');
  const body = Buffer.from(parts[3]!, 'base64url');
  body[0]! ^= 0x80;
  parts[3] = body.toString('base64url');
  return parts.join('.');
}
