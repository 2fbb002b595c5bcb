/**
 * The native store under TypeORM `replication`: every read goes to the primary. The replica
 * is a second database, migrated and left empty, so a read that reaches it misses the row
 * written a moment before, as a lagging replica would (and a code would look unused, a
 * rotated token current).
 */
import { createHash, randomBytes } from 'node:crypto';
import { TypeOrmAppSessionStore } from 'nestjs-atproto-auth';
import { AtProtoNativeRefreshFamilyEntity } from '../../lib/storage/entities/native-refresh-family.entity.js';
import { TypeOrmNativeStore } from '../../lib/storage/typeorm/typeorm-native.store.js';
import { useDataSource } from '../support/data-source-hook.js';
import { REPLICA_DIALECTS, replicatedDataSource } from '../support/replicated-data-source.js';
import { randomDid } from './support/native-world.js';

const MINUTE = 60_000;
const sha256Hex = (v: string) => createHash('sha256').update(v).digest('hex');
const random = () => randomBytes(32).toString('base64url');

describe.each(REPLICA_DIALECTS)('native reads with a lagging replica on %s', (dialect) => {
  const ds = useDataSource(() => replicatedDataSource(dialect, 'native_replica'));

  it('reads codes and families on the primary: consume, pending logins, rotation, cleanup', async () => {
    const store = new TypeOrmNativeStore(ds());
    const now = Date.now();
    const did = randomDid();
    const code = {
      id: sha256Hex(random()),
      did,
      redirectUri: 'com.example.app:/oauth/callback',
      codeChallenge: random(),
      createdAt: new Date(now),
      expiresAt: new Date(now + MINUTE),
      usedAt: null,
    };
    await store.createCode(code);
    expect(await store.hasPendingCode(did, new Date(now))).toBe(true);
    expect(await store.consumeCode(code.id, code, new Date(now + 1))).toMatchObject({ did });

    const family = {
      id: sha256Hex(random()),
      did,
      currentJti: random(),
      previousJti: null,
      rotatedAt: new Date(now),
      createdAt: new Date(now),
      expiresAt: new Date(now - 1),
      revokedAt: null,
    };
    await store.createFamily(family);
    // Really a replica setup: a plain find misses the row just written.
    expect(
      await ds().getRepository(AtProtoNativeRefreshFamilyEntity).findOneBy({ id: family.id }),
    ).toBeNull();
    expect(await store.getFamily(family.id)).toEqual(family);
    const next = random();
    expect(await store.rotateFamily(family.id, family.currentJti, next, new Date(now + 2))).toBe(
      true,
    );
    expect((await store.getFamily(family.id))?.currentJti).toBe(next);

    // Cleanup: the expired family and the expired code are found (on the primary).
    await new TypeOrmAppSessionStore(ds()).create({
      id: family.id,
      did,
      createdAt: new Date(now),
      expiresAt: new Date(now + MINUTE),
      lastSeenAt: new Date(now),
      revokedAt: null,
      userAgent: null,
    });
    expect(await store.deleteEndedFamilies({ now, revokedBefore: now - MINUTE }, 10)).toBe(1);
    expect(await store.deleteExpiredCodes(now + 2 * MINUTE, 10)).toBe(1);
  });
});
