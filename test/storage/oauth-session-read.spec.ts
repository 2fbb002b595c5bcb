/**
 * The OAuth session store's read, behind every restore, on the three databases: it returns
 * what TypeORM's entity read of the same row holds (secret columns decrypted, instants as
 * `Date`, the version as a number, a null access expiry kept), an expired or unknown session
 * is `undefined`, and a value the key ring cannot authenticate fails as before.
 */
import type { NodeSavedSession } from '@atproto/oauth-client-node';
import type { DataSource } from 'typeorm';
import { AtProtoOAuthSessionEntity, TypeOrmSessionStore } from 'nestjs-atproto-auth';
import { DIALECTS, migratedDataSource } from '../support/databases.js';
import { installTestKeyRing } from '../support/key-ring.js';
import { randomDid, readRawSecret, sessionValue, writeRawSecret } from '../support/raw-sql.js';

installTestKeyRing();

describe.each(DIALECTS)('TypeOrmSessionStore read on %s', (dialect) => {
  let dataSource: DataSource;
  let close: () => Promise<void>;
  let store: TypeOrmSessionStore;
  let now = 1_700_000_000_123;

  beforeAll(async () => {
    ({ dataSource, close } = await migratedDataSource(dialect, 'oauth_session_read'));
    store = new TypeOrmSessionStore(dataSource, { ttlMs: 86_400_000, now: () => now });
  });
  afterAll(() => close?.());
  beforeEach(() => {
    now = 1_700_000_000_123;
  });

  /** What the entity path reads, shaped as the store answers. */
  async function entityRead(did: string) {
    const row = await dataSource.getRepository(AtProtoOAuthSessionEntity).findOneBy({ did });
    if (!row) return undefined;
    return {
      value: {
        tokenSet: JSON.parse(row.tokenSet) as unknown,
        dpopJwk: JSON.parse(row.dpopKey) as unknown,
        authMethod: JSON.parse(row.authMethod) as unknown,
      },
      version: Number(row.version),
      updatedAt: row.updatedAt,
    };
  }

  it("returns what TypeORM's entity read holds, with and without an access expiry", async () => {
    const did = randomDid();
    const value = sessionValue(did);
    await store.set(did, value);
    const got = await store.getVersioned(did);
    expect(got).toStrictEqual(await entityRead(did));
    expect(got!.value).toStrictEqual(value);
    expect(got!.updatedAt).toStrictEqual(new Date(now));

    const noExpiry = randomDid();
    const { expires_at: _, ...tokenSet } = sessionValue(noExpiry).tokenSet;
    const value2 = { ...sessionValue(noExpiry), tokenSet } as NodeSavedSession;
    await store.set(noExpiry, value2);
    now += 5;
    await store.set(noExpiry, value2);
    const got2 = await store.getVersioned(noExpiry);
    expect(got2).toStrictEqual(await entityRead(noExpiry));
    expect(got2!.value).toStrictEqual(value2);
    expect(got2!.version).toBe(got!.version + 1);
    const raw = (await dataSource.query(
      'SELECT access_expires_at AS x FROM atproto_oauth_session WHERE did = ' +
        (dialect === 'postgres' ? '$1' : '?'),
      [noExpiry],
    )) as Array<{ x: unknown }>;
    expect(raw[0]!.x).toBeNull();
  });

  it('unknown and expired sessions are undefined', async () => {
    expect(await store.getVersioned(randomDid())).toBeUndefined();
    const did = randomDid();
    await store.set(did, sessionValue(did));
    now += 86_400_000;
    expect(await store.get(did)).toBeUndefined();
  });

  it('a secret column moved to the other column fails to decrypt, as before', async () => {
    const did = randomDid();
    await store.set(did, sessionValue(did));
    const tokens = await readRawSecret(
      dataSource,
      dialect,
      'atproto_oauth_session',
      'token_set',
      did,
    );
    await writeRawSecret(dataSource, dialect, 'atproto_oauth_session', 'dpop_key', did, tokens);
    await expect(store.get(did)).rejects.toMatchObject({ code: 'ERR_AT_PROTO_DECRYPT' });
    await expect(
      dataSource.getRepository(AtProtoOAuthSessionEntity).findOneBy({ did }),
    ).rejects.toMatchObject({ code: 'ERR_AT_PROTO_DECRYPT' });
  });
});
