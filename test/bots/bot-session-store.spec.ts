/**
 * The bot-session stores (TypeORM on SQLite, PostgreSQL and MariaDB, and memory): a session
 * comes back as written, the JWTs are ciphertext at rest, and writes are fenced by version
 * (a holder that read an older version can neither overwrite nor delete a newer session,
 * and a deleted session is not re-created by a late write).
 */
import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import {
  type BotSessionStore,
  MemoryBotSessionStore,
  type StoredBotSession,
  TypeOrmBotSessionStore,
} from '../../lib/bots/bot-session.store.js';
import { createTestDatabase, DIALECTS } from '../support/databases.js';
import { installTestKeyRing } from '../support/key-ring.js';
import { randomDid } from '../support/raw-sql.js';

installTestKeyRing();

function session(did: string, n: number): StoredBotSession {
  return {
    did,
    handle: 'robot.example.com',
    pdsUrl: 'https://pds.example.com',
    accessJwt: `eyJhbGciOiJIUzI1NiJ9.access-${n}.sig`,
    refreshJwt: `eyJhbGciOiJIUzI1NiJ9.refresh-${n}.sig`,
    accessExpiresAt: Date.now() + 7_200_000,
    expiresAt: Date.now() + 90 * 86_400_000,
  };
}

/**
 * The cases every bot-session store passes. `makeStore` builds the store on the clock it is
 * given: `skew` moves that clock ahead of the real one.
 */
function fencing(makeStore: (now: () => number) => BotSessionStore) {
  let store: BotSessionStore;
  let skew = 0;
  beforeAll(() => {
    store = makeStore(() => Date.now() + skew);
  });
  afterEach(() => {
    skew = 0;
  });

  it('gives back what was written, at a version', async () => {
    const did = randomDid();
    const written = session(did, 1);
    await store.set(written);
    const read = await store.get(did);
    expect(read?.value).toEqual(written);
    expect(Number.isSafeInteger(read?.version)).toBe(true);
  });

  it('a write at the version read applies once; a second one at that version is fenced out', async () => {
    const did = randomDid();
    await store.set(session(did, 1));
    const { version } = (await store.get(did))!;
    expect(await store.setIfVersion(session(did, 2), version)).toBe(version + 1);
    expect(await store.setIfVersion(session(did, 3), version)).toBeUndefined();
    expect((await store.get(did))?.value.refreshJwt).toBe(session(did, 2).refreshJwt);
  });

  it('a delete at an old version keeps the newer session; at the current one it deletes', async () => {
    const did = randomDid();
    await store.set(session(did, 1));
    const old = (await store.get(did))!.version;
    await store.setIfVersion(session(did, 2), old);
    expect(await store.delIfVersion(did, old)).toBe(false);
    expect(await store.get(did)).toBeDefined();
    expect(await store.delIfVersion(did, old + 1)).toBe(true);
    expect(await store.get(did)).toBeUndefined();
    // A late write by a holder that read the deleted session does not bring it back.
    expect(await store.setIfVersion(session(did, 3), old + 1)).toBeUndefined();
    expect(await store.get(did)).toBeUndefined();
  });

  it('a session whose refresh JWT has expired is not handed out', async () => {
    const did = randomDid();
    await store.set({ ...session(did, 1), expiresAt: Date.now() - 1 });
    expect(await store.get(did)).toBeUndefined();
    // deleteExpired removes it once (its end is reported once), and never a live one.
    expect(await store.deleteExpired(did)).toBe(true);
    expect(await store.deleteExpired(did)).toBe(false);
    const live = randomDid();
    await store.set(session(live, 1));
    expect(await store.deleteExpired(live)).toBe(false);
    expect(await store.get(live)).toBeDefined();
  });

  // A refresh reads the session under the bot's lock while its refresh JWT is valid, and
  // writes the PDS's answer when it comes back. The PDS accepted that refresh JWT, so the
  // session did not end: if its old expiry passed in between (a refresh at the end of the 90
  // days, or the PDS's clock behind ours), the renewed session is stored all the same, and
  // cleanup leaves it alone. Dropping it would lose the new JWTs (the old refresh JWT is
  // spent at the PDS), report the session ended, and make the bot log in with its password.
  it('a refresh read while the session was live is written even if its old expiry has passed since', async () => {
    const did = randomDid();
    await store.set({ ...session(did, 1), expiresAt: Date.now() + 60_000 });
    const { version } = (await store.get(did))!;
    skew = 120_000;
    expect(await store.get(did)).toBeUndefined();
    const renewed = session(did, 2);
    expect(await store.setIfVersion(renewed, version)).toBe(version + 1);
    expect(await store.get(did)).toEqual({ value: renewed, version: version + 1 });
    expect(await store.deleteExpired(did)).toBe(false);
    expect(await store.listExpired(Date.now() + skew, 1000)).not.toContain(did);
  });

  it('an expired session deleted before the refresh is written stays deleted', async () => {
    const did = randomDid();
    await store.set({ ...session(did, 1), expiresAt: Date.now() + 60_000 });
    const { version } = (await store.get(did))!;
    skew = 120_000;
    // Its end is reported by whoever deleted it (cleanup, or its next use).
    expect(await store.deleteExpired(did)).toBe(true);
    expect(await store.setIfVersion(session(did, 2), version)).toBeUndefined();
    expect(await store.get(did)).toBeUndefined();
    expect(await store.listExpired(Date.now() + skew, 1000)).not.toContain(did);
  });

  it('an expired session is deleted at its version (a refresh the PDS refused), once', async () => {
    const did = randomDid();
    await store.set({ ...session(did, 1), expiresAt: Date.now() + 60_000 });
    const { version } = (await store.get(did))!;
    skew = 120_000;
    expect(await store.delIfVersion(did, version + 1)).toBe(false);
    expect(await store.delIfVersion(did, version)).toBe(true);
    expect(await store.deleteExpired(did)).toBe(false);
  });
}

describe('memory bot-session store', () => {
  fencing((now) => new MemoryBotSessionStore(now));
});

describe.each(DIALECTS)('TypeORM bot-session store on %s', (dialect) => {
  let ds: DataSource;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'bot_store');
    drop = db.drop;
    ds = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
    });
    await ds.initialize();
  });
  afterAll(async () => {
    await ds?.destroy();
    await drop?.();
  });

  fencing((now) => new TypeOrmBotSessionStore(ds, { now }));

  it('stores the JWTs as ciphertext only', async () => {
    const did = randomDid();
    await new TypeOrmBotSessionStore(ds).set(session(did, 7));
    const rows: unknown[] = await ds.query('SELECT * FROM atproto_bot_session');
    const raw = JSON.stringify(rows);
    expect(raw).toContain(did);
    expect(raw).not.toContain('access-7');
    expect(raw).not.toContain('refresh-7');
    expect(raw).not.toContain('eyJ');
  });
});
