/**
 * The API-key store's `get`, what the guard reads on a key-cache miss, on the three
 * databases: every column as written (scopes as an array or `null`, optional instants as
 * `Date` or `null`), the same as TypeORM's entity read of the row, and `undefined` for an
 * unknown or malformed id.
 */
import { randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import {
  type AtProtoApiKeyRecord,
  AtProtoApiKeyEntity,
  TypeOrmApiKeyStore,
} from 'nestjs-atproto-auth';
import { DIALECTS, migratedDataSource } from '../support/databases.js';

const hexId = () => randomBytes(32).toString('hex');

function fixtures(): AtProtoApiKeyRecord[] {
  return [
    {
      id: hexId(),
      did: 'did:plc:abcdefghijklmnopqrstuvwx',
      name: 'deploy bot ✓',
      displayPrefix: 'atp_abcdefgh',
      scopes: ['read', 'write:posts'],
      createdAt: new Date(1_700_000_000_123),
      expiresAt: new Date(4_102_444_800_999),
      revokedAt: new Date(1_700_000_100_456),
      lastUsedAt: new Date(1_700_000_050_001),
    },
    {
      id: hexId(),
      did: 'did:web:example.com',
      name: 'n',
      displayPrefix: 'atp_12345678',
      scopes: null,
      createdAt: new Date(0),
      expiresAt: null,
      revokedAt: null,
      lastUsedAt: null,
    },
    {
      id: hexId(),
      did: 'did:plc:zzzzzzzzzzzzzzzzzzzzzzzz',
      name: 'x'.repeat(100),
      displayPrefix: 'p'.repeat(32),
      scopes: [],
      createdAt: new Date(Date.now()),
      expiresAt: new Date(Date.now() + 1),
      revokedAt: null,
      lastUsedAt: null,
    },
  ];
}

describe.each(DIALECTS)('TypeOrmApiKeyStore.get on %s', (dialect) => {
  let dataSource: DataSource;
  let close: () => Promise<void>;
  let store: TypeOrmApiKeyStore;
  const rows = fixtures();

  beforeAll(async () => {
    ({ dataSource, close } = await migratedDataSource(dialect, 'api_key_read'));
    store = new TypeOrmApiKeyStore(dataSource);
    for (const r of rows) await store.create(r);
  });
  afterAll(() => close?.());

  it('returns each key exactly as written, and as the entity read holds it', async () => {
    for (const expected of rows) {
      const got = await store.get(expected.id);
      expect(got).toStrictEqual(expected);
      const entity = await dataSource
        .getRepository(AtProtoApiKeyEntity)
        .findOneBy({ id: expected.id });
      expect(got).toStrictEqual({ ...entity });
    }
  });

  it('unknown and malformed ids are undefined', async () => {
    expect(await store.get(hexId())).toBeUndefined();
    expect(await store.get(rows[0]!.id.toUpperCase())).toBeUndefined();
    expect(await store.get("' OR '1'='1")).toBeUndefined();
  });
});
