import { DataSource } from 'typeorm';
import {
  type ResolvedAtProtoOptions,
  AppSessionService,
  atProtoEntities,
  atProtoMigrations,
  TypeOrmAppSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';

const DAY = 24 * 60 * 60_000;
const alice = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa';
const bob = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb';

// A "devices" page revokes by an id taken from the request: with the owner passed, one
// user cannot end another's session, on the TypeORM store the module uses in production.
describe('AppSessionService.revoke(id, { did }) on TypeORM (SQLite)', () => {
  let source: DataSource;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    const db = await createTestDatabase('sqlite', 'revoke_owner');
    drop = db.drop;
    source = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
    });
    await source.initialize();
  });
  afterAll(async () => {
    await source?.destroy();
    await drop?.();
  });

  it.each([0, 2000])('refuses a session of another DID (cache TTL %i ms)', async (cacheTtlMs) => {
    const options = {
      appSession: { idleTtlMs: 2 * DAY, absoluteTtlMs: 10 * DAY, cacheTtlMs },
    } as unknown as ResolvedAtProtoOptions;
    const store = new TypeOrmAppSessionStore(source);
    const sessions = new AppSessionService(options, store);
    const a = await sessions.create(alice, 'alice phone');
    const b = await sessions.create(bob, 'bob laptop');
    expect(await sessions.validate(a.token)).toBeDefined();

    expect(await sessions.revoke(a.session.id, { did: bob })).toBe(false);
    expect(await sessions.validate(a.token)).toBeDefined();
    expect((await store.get(a.session.id))?.revokedAt).toBeNull();
    expect(await sessions.revoke('f'.repeat(64), { did: bob })).toBe(false);
    expect(await sessions.revoke("' OR 1=1 --", { did: bob })).toBe(false);

    expect(await sessions.revoke(b.session.id, { did: bob })).toBe(true);
    expect((await store.get(b.session.id))?.revokedAt).toBeInstanceOf(Date);
    expect(await sessions.validate(b.token)).toBeUndefined();
    expect(await sessions.validate(a.token)).toBeDefined();
  });
});
