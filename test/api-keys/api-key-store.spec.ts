/**
 * The API key stores' contract, the same on the memory store and on TypeORM over SQLite,
 * PostgreSQL and MariaDB: round trip, owner-checked revocation, the conditional last-use
 * write, `hasActive`, and refused input.
 */
import { randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';
import { AtProtoStoreError, atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import type { AtProtoApiKeyRecord, AtProtoApiKeyStore } from '../../lib/api-keys/api-key.store.js';
import { MemoryApiKeyStore } from '../../lib/storage/memory/memory-api-key.store.js';
import { TypeOrmApiKeyStore } from '../../lib/storage/typeorm/typeorm-api-key.store.js';
import { createTestDatabase, DIALECTS } from '../support/databases.js';
import { randomDid } from '../support/raw-sql.js';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

function record(did: string, over: Partial<AtProtoApiKeyRecord> = {}): AtProtoApiKeyRecord {
  return {
    id: randomBytes(32).toString('hex'),
    did,
    name: 'deploy bot',
    displayPrefix: 'atp_AbCd1234',
    scopes: null,
    createdAt: new Date(Date.now() - MINUTE),
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
    ...over,
  };
}

type Backend = {
  name: string;
  open: () => Promise<{ store: AtProtoApiKeyStore; close: () => Promise<void> }>;
};

const backends: Backend[] = [
  { name: 'memory', open: async () => ({ store: new MemoryApiKeyStore(), close: async () => {} }) },
  ...DIALECTS.map((dialect) => ({
    name: `TypeORM on ${dialect}`,
    open: async () => {
      const db = await createTestDatabase(dialect, 'api_key_store');
      const ds = new DataSource({
        ...db.options,
        entities: [...atProtoEntities],
        migrations: atProtoMigrations(),
        migrationsRun: true,
      });
      await ds.initialize();
      return {
        store: new TypeOrmApiKeyStore(ds),
        close: async () => {
          await ds.destroy();
          await db.drop();
        },
      };
    },
  })),
];

describe.each(backends)('API key store: $name', ({ open }) => {
  let store: AtProtoApiKeyStore;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ store, close } = await open());
  });
  afterAll(async () => {
    await close?.();
  });

  it('keeps every field, scopes and a unicode name included', async () => {
    const did = randomDid();
    const plain = record(did);
    const full = record(did, {
      name: 'Bötchen – 日本語 🤖',
      scopes: ['feed:read', 'posts/write'],
      expiresAt: new Date(Date.now() + DAY),
      createdAt: new Date(Date.now() - 2 * MINUTE),
    });
    await store.create(plain);
    await store.create(full);
    expect(await store.get(plain.id)).toEqual(plain);
    expect(await store.get(full.id)).toEqual(full);
    expect(await store.get('0'.repeat(64))).toBeUndefined();
    expect(await store.get('not an id')).toBeUndefined();
    expect(await store.get(plain.id.toUpperCase())).toBeUndefined();
  });

  it('refuses a second key with the same id', async () => {
    const r = record(randomDid());
    await store.create(r);
    await expect(store.create({ ...r, name: 'other' })).rejects.toBeInstanceOf(AtProtoStoreError);
    expect((await store.get(r.id))?.name).toBe('deploy bot');
  });

  it('lists the keys of one DID, newest first, revoked and expired included', async () => {
    const did = randomDid();
    const now = Date.now();
    const old = record(did, {
      createdAt: new Date(now - 3 * MINUTE),
      revokedAt: new Date(now - MINUTE),
    });
    const mid = record(did, {
      createdAt: new Date(now - 2 * MINUTE),
      expiresAt: new Date(now - 1),
    });
    const recent = record(did, { createdAt: new Date(now - MINUTE) });
    for (const r of [mid, recent, old]) await store.create(r);
    await store.create(record(randomDid()));
    // A DID differing only in case is another DID.
    await store.create(record(did.toUpperCase().replace('DID:PLC:', 'did:plc:')));
    expect((await store.listForDid(did)).map((r) => r.id)).toEqual([recent.id, mid.id, old.id]);
  });

  it('revokes only its owner’s key, once', async () => {
    const did = randomDid();
    const other = randomDid();
    const r = record(did);
    await store.create(r);
    const at = new Date();
    expect(await store.revoke(r.id, other, at)).toBe(false);
    expect((await store.get(r.id))?.revokedAt).toBeNull();
    expect(await store.revoke('f'.repeat(64), did, at)).toBe(false);
    expect(await store.revoke(r.id, did, at)).toBe(true);
    expect((await store.get(r.id))?.revokedAt).toEqual(at);
    expect(await store.revoke(r.id, did, new Date(at.getTime() + 1))).toBe(false);
    expect((await store.get(r.id))?.revokedAt).toEqual(at);
  });

  it('touch writes only when the last use is unset or older than the cutoff', async () => {
    const r = record(randomDid());
    await store.create(r);
    const t0 = Date.now();
    expect(await store.touch(r.id, new Date(t0), new Date(t0 - 5 * MINUTE))).toBe(true);
    expect((await store.get(r.id))?.lastUsedAt).toEqual(new Date(t0));
    // Within the interval: no write, whoever asks.
    expect(await store.touch(r.id, new Date(t0 + MINUTE), new Date(t0 + MINUTE - 5 * MINUTE))).toBe(
      false,
    );
    expect(await store.touch(r.id, new Date(t0 + 5 * MINUTE), new Date(t0))).toBe(false);
    expect((await store.get(r.id))?.lastUsedAt).toEqual(new Date(t0));
    // Past it: one write.
    expect(await store.touch(r.id, new Date(t0 + 5 * MINUTE + 1), new Date(t0 + 1))).toBe(true);
    expect((await store.get(r.id))?.lastUsedAt).toEqual(new Date(t0 + 5 * MINUTE + 1));
    expect(await store.touch('e'.repeat(64), new Date(t0), new Date(t0))).toBe(false);
  });

  it('hasActive: a key neither revoked nor expired', async () => {
    const now = new Date();
    const did = randomDid();
    expect(await store.hasActive(did, now)).toBe(false);
    await store.create(record(did, { revokedAt: new Date(now.getTime() - 1) }));
    await store.create(record(did, { expiresAt: now }));
    expect(await store.hasActive(did, now)).toBe(false);
    const live = record(did, { expiresAt: new Date(now.getTime() + 1) });
    await store.create(live);
    expect(await store.hasActive(did, now)).toBe(true);
    expect(await store.hasActive(did, new Date(now.getTime() + 1))).toBe(false);
    const forever = record(did);
    await store.create(forever);
    expect(await store.hasActive(did, new Date(now.getTime() + 1000 * DAY))).toBe(true);
    await store.revoke(forever.id, did, now);
    expect(await store.hasActive(did, new Date(now.getTime() + 1000 * DAY))).toBe(false);
    expect(await store.hasActive(randomDid(), now)).toBe(false);
  });

  it('refuses a malformed DID with AtProtoStoreError', async () => {
    await expect(store.create(record('not-a-did'))).rejects.toBeInstanceOf(AtProtoStoreError);
    await expect(store.listForDid('did:plc:ünïcode')).rejects.toBeInstanceOf(AtProtoStoreError);
  });
});
