/**
 * The revocation cursor's query, `revokedSince`, on every store: the app sessions and API
 * keys revoked after an instant, oldest first, limited; on the primary under replication
 * (a lagging replica would hide the revocation the cursor exists to see).
 */
import { randomBytes } from 'node:crypto';
import {
  MemoryApiKeyStore,
  MemoryAppSessionStore,
  TypeOrmApiKeyStore,
  TypeOrmAppSessionStore,
} from 'nestjs-atproto-auth';
import type { AtProtoApiKeyStore } from '../../lib/api-keys/api-key.store.js';
import type { AppSessionStore } from '../../lib/storage/store.interface.js';
import { useDataSource } from '../support/data-source-hook.js';
import { DIALECTS, migratedDataSource } from '../support/databases.js';
import { REPLICA_DIALECTS, replicatedDataSource } from '../support/replicated-data-source.js';

const T = 1_800_000_000_000;
const DID = 'did:plc:revokedsince234567abcdefg';
const id = () => randomBytes(32).toString('hex');

function session(createdAt = T) {
  return {
    id: id(),
    did: DID,
    createdAt: new Date(createdAt),
    expiresAt: new Date(createdAt + 86_400_000),
    lastSeenAt: new Date(createdAt),
    revokedAt: null,
    userAgent: null,
  };
}

function key(createdAt = T) {
  const k = id();
  return {
    id: k,
    did: DID,
    name: 'k',
    displayPrefix: `atp_${k.slice(0, 8)}`,
    scopes: null,
    createdAt: new Date(createdAt),
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
  };
}

async function check(sessions: AppSessionStore, keys: AtProtoApiKeyStore): Promise<void> {
  const s = [session(), session(), session(), session()];
  for (const r of s) await sessions.create(r);
  await sessions.revoke(s[0]!.id, new Date(T + 10));
  await sessions.revoke(s[1]!.id, new Date(T + 30));
  await sessions.revoke(s[2]!.id, new Date(T + 20));
  // s[3] stays active.
  expect(await sessions.revokedSince!(new Date(T + 10), 10)).toEqual([
    { id: s[2]!.id, did: DID, revokedAt: new Date(T + 20) },
    { id: s[1]!.id, did: DID, revokedAt: new Date(T + 30) },
  ]);
  expect((await sessions.revokedSince!(new Date(T), 2)).map((r) => r.id)).toEqual([
    s[0]!.id,
    s[2]!.id,
  ]);
  expect(await sessions.revokedSince!(new Date(T + 30), 10)).toEqual([]);

  const k = [key(), key()];
  for (const r of k) await keys.create(r);
  await keys.revoke(k[1]!.id, DID, new Date(T + 5));
  expect(await keys.revokedSince!(new Date(T), 10)).toEqual([
    { id: k[1]!.id, did: DID, revokedAt: new Date(T + 5) },
  ]);
  expect(await keys.revokedSince!(new Date(T + 5), 10)).toEqual([]);
}

it('memory stores', async () => {
  await check(new MemoryAppSessionStore(), new MemoryApiKeyStore());
});

describe.each(DIALECTS)('TypeORM stores on %s', (dialect) => {
  const ds = useDataSource(() => migratedDataSource(dialect, 'revoked_since'));

  it('lists the revocations after the instant, oldest first, limited', async () => {
    await check(new TypeOrmAppSessionStore(ds()), new TypeOrmApiKeyStore(ds()));
  });
});

describe.each(REPLICA_DIALECTS)('with a lagging replica on %s', (dialect) => {
  const ds = useDataSource(() => replicatedDataSource(dialect, 'revoked_since_replica'));

  it('reads the primary', async () => {
    await check(new TypeOrmAppSessionStore(ds()), new TypeOrmApiKeyStore(ds()));
  });
});
