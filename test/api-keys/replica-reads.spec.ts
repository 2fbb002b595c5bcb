/**
 * API keys under TypeORM `replication`: every read of the key store and every cleanup select
 * that looks at keys goes to the primary. The replica is a second database, migrated and left
 * empty: a read that reaches it finds nothing, as a lagging replica would for a key created,
 * revoked or used a moment before.
 */
import { TypeOrmSessionStore } from 'nestjs-atproto-auth';
import { AtProtoApiKeyService } from '../../lib/api-keys/api-key.service.js';
import { TypeOrmCleanupTarget } from '../../lib/cleanup/typeorm-cleanup.target.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import { AtProtoApiKeyEntity } from '../../lib/storage/entities/api-key.entity.js';
import { TypeOrmApiKeyStore } from '../../lib/storage/typeorm/typeorm-api-key.store.js';
import { useDataSource } from '../support/data-source-hook.js';
import { installTestKeyRing } from '../support/key-ring.js';
import { randomDid, sessionValue } from '../support/raw-sql.js';
import { REPLICA_DIALECTS, replicatedDataSource } from '../support/replicated-data-source.js';

installTestKeyRing();

const HOUR = 3_600_000;
const options = {
  appSession: { cacheTtlMs: 0 },
  apiKeys: { prefix: 'atp_', lastUsedIntervalMs: 300_000, revokedGraceMs: 86_400_000 },
} as unknown as ResolvedAtProtoOptions;

describe.each(REPLICA_DIALECTS)('API keys with a lagging replica on %s', (dialect) => {
  const ds = useDataSource(() => replicatedDataSource(dialect, 'api_key_replica'));

  it('is a real replica setup: a plain find goes to the (empty) replica', async () => {
    const service = new AtProtoApiKeyService(options, new TypeOrmApiKeyStore(ds()));
    const { info } = await service.create(randomDid(), { name: 'bot' });
    expect(await ds().getRepository(AtProtoApiKeyEntity).findOneBy({ id: info.id })).toBe(null);
  });

  it('validate, list and hasActive see a key created a moment before; validate refuses it once revoked', async () => {
    const store = new TypeOrmApiKeyStore(ds());
    const service = new AtProtoApiKeyService(options, store);
    const did = randomDid();
    const { key, info } = await service.create(did, { name: 'bot' });
    expect(await service.validate(key)).toMatchObject({ id: info.id });
    expect((await service.list(did)).map((k) => k.id)).toEqual([info.id]);
    expect(await service.hasActive(did)).toBe(true);
    // The last-use write lands on the primary, and reads see it.
    for (let i = 0; i < 200 && !(await store.get(info.id))?.lastUsedAt; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect((await store.get(info.id))?.lastUsedAt).not.toBeNull();
    expect(await service.revoke(info.id, { did })).toBe(true);
    expect(await service.validate(key)).toBeUndefined();
    expect(await service.hasActive(did)).toBe(false);
  });

  it('cleanup sees keys created and revoked a moment before', async () => {
    const now = Date.now();
    const sessions = new TypeOrmSessionStore(ds(), { ttlMs: HOUR });
    const service = new AtProtoApiKeyService(options, new TypeOrmApiKeyStore(ds()));
    const target = new TypeOrmCleanupTarget(ds());
    const cutoffs = { now, idleBefore: now - 7 * 24 * HOUR };
    const withKey = randomDid();
    const withoutKey = randomDid();
    for (const did of [withKey, withoutKey]) await sessions.set(did, sessionValue(did));
    await service.create(withKey, { name: 'bot' });
    expect(await target.didsWithoutActiveAppSession([withKey, withoutKey], cutoffs)).toEqual([
      withoutKey,
    ]);
    const page = await target.oauthSessionsWithoutActiveAppSession(cutoffs, undefined, 10_000);
    expect(page).toContain(withoutKey);
    expect(page).not.toContain(withKey);

    const { info } = await service.create(withoutKey, { name: 'revoked at once' });
    await service.revoke(info.id, { did: withoutKey });
    const deleted = await target.deleteEndedApiKeys(Date.now() + 1, 100);
    expect(deleted.dids).toContain(withoutKey);
    expect(deleted.deleted).toBeGreaterThanOrEqual(1);
  });
});
