/**
 * The app-session store's `get`, what the guard reads on every cache miss, on the three
 * databases: each column comes back exactly as it was written (instants to the millisecond
 * as `Date`, nulls as `null`, text byte for byte), a revoked session is returned revoked
 * (the caller decides), and an unknown or malformed id is `undefined`. The rows are written
 * by plain SQL, so that the expected records do not come from the store's own write path,
 * and each read is also compared with TypeORM's entity read of the same row.
 */
import { randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import {
  type AppSessionRecord,
  AtProtoAppSessionEntity,
  TypeOrmAppSessionStore,
} from 'nestjs-atproto-auth';
import { DIALECTS, migratedDataSource } from '../support/databases.js';
import { p, q } from '../support/raw-sql.js';

const hexId = () => randomBytes(32).toString('hex');

/** Rows that cover every shape a column can take. */
function fixtures(): AppSessionRecord[] {
  return [
    {
      id: hexId(),
      did: 'did:plc:abcdefghijklmnopqrstuvwx',
      createdAt: new Date(1_700_000_000_123),
      // Year 2100: past 2^32 seconds, and past 2^41 milliseconds.
      expiresAt: new Date(4_102_444_800_999),
      lastSeenAt: new Date(1_700_000_060_001),
      revokedAt: new Date(1_700_000_100_456),
      userAgent: 'Mozilla/5.0 (X11; Linux x86_64) ünïcödé ✓ 🚀',
    },
    {
      id: hexId(),
      did: 'did:web:example.com',
      createdAt: new Date(0),
      expiresAt: new Date(1),
      lastSeenAt: new Date(999),
      revokedAt: null,
      userAgent: null,
    },
    {
      id: hexId(),
      did: `did:web:${'a'.repeat(400)}.example`,
      createdAt: new Date(Date.now()),
      expiresAt: new Date(Date.now() + 30 * 86_400_000),
      lastSeenAt: new Date(Date.now()),
      revokedAt: null,
      userAgent: 'x'.repeat(512),
    },
    {
      id: hexId(),
      did: 'did:plc:zzzzzzzzzzzzzzzzzzzzzzzz',
      createdAt: new Date(1_600_000_000_000),
      expiresAt: new Date(1_600_000_000_001),
      lastSeenAt: new Date(1_600_000_000_000),
      revokedAt: new Date(1_600_000_000_000),
      userAgent: '',
    },
  ];
}

describe.each(DIALECTS)('TypeOrmAppSessionStore.get on %s', (dialect) => {
  let dataSource: DataSource;
  let close: () => Promise<void>;
  let store: TypeOrmAppSessionStore;
  const rows = fixtures();

  beforeAll(async () => {
    ({ dataSource, close } = await migratedDataSource(dialect, 'app_session_read'));
    store = new TypeOrmAppSessionStore(dataSource);
    const columns = [
      'id',
      'did',
      'created_at',
      'expires_at',
      'last_seen_at',
      'revoked_at',
      'user_agent',
    ];
    for (const r of rows) {
      await dataSource.query(
        `INSERT INTO ${q(dialect, 'atproto_app_session')} (${columns.map((c) => q(dialect, c)).join(', ')})
         VALUES (${columns.map((_, i) => p(dialect, i + 1)).join(', ')})`,
        [
          r.id,
          r.did,
          r.createdAt.getTime(),
          r.expiresAt.getTime(),
          r.lastSeenAt.getTime(),
          r.revokedAt?.getTime() ?? null,
          r.userAgent,
        ],
      );
    }
  });
  afterAll(() => close?.());

  it('returns each row exactly as written: instants, nulls, text', async () => {
    for (const expected of rows) {
      const got = await store.get(expected.id);
      expect(got).toStrictEqual(expected);
      expect(got!.createdAt).toBeInstanceOf(Date);
      expect(got!.revokedAt === null || got!.revokedAt instanceof Date).toBe(true);
    }
  });

  it("returns what TypeORM's entity read of the same row holds", async () => {
    for (const { id } of rows) {
      const entity = await dataSource.getRepository(AtProtoAppSessionEntity).findOneBy({ id });
      expect(entity).not.toBeNull();
      expect(await store.get(id)).toStrictEqual({ ...entity });
    }
  });

  it('unknown and malformed ids are undefined', async () => {
    expect(await store.get(hexId())).toBeUndefined();
    expect(await store.get(rows[0]!.id.toUpperCase())).toBeUndefined();
    expect(await store.get(`${rows[0]!.id}0`)).toBeUndefined();
    expect(await store.get("' OR '1'='1")).toBeUndefined();
    expect(await store.get('')).toBeUndefined();
  });

  it('sees its own writes: touch, revoke', async () => {
    const record: AppSessionRecord = {
      id: hexId(),
      did: 'did:plc:abcdefghijklmnopqrstuvwx',
      createdAt: new Date(1_700_000_000_000),
      expiresAt: new Date(1_800_000_000_000),
      lastSeenAt: new Date(1_700_000_000_000),
      revokedAt: null,
      userAgent: 'ua',
    };
    await store.create(record);
    expect(await store.get(record.id)).toStrictEqual(record);
    await store.touch(record.id, new Date(1_700_000_000_777));
    expect((await store.get(record.id))?.lastSeenAt).toEqual(new Date(1_700_000_000_777));
    expect(await store.revoke(record.id, new Date(1_700_000_001_234))).toBe(true);
    expect(await store.get(record.id)).toStrictEqual({
      ...record,
      lastSeenAt: new Date(1_700_000_000_777),
      revokedAt: new Date(1_700_000_001_234),
    });
  });
});
