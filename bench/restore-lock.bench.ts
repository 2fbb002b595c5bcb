/**
 * What a restore of a fresh session costs under the distributed lock, and what the
 * no-refresh scope saves (docs/benchmarks.md).
 *
 * Both variants do what the module does for one restore, against real PostgreSQL and Redis:
 * - locked: take the Redlock lock for the DID, read the session inside it, release;
 * - skip: read the session to check its access token is fresh (the module's pre-check),
 *   then run the client's read inside `lock.run` marked with the no-refresh scope: Redis is
 *   skipped and the client's read returns the session just read (no second query).
 * They alternate in rounds within one process, and the ratio of their medians is reported.
 */
import { performance } from 'node:perf_hooks';
import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations, TypeOrmSessionStore } from 'nestjs-atproto-auth';
import { noRefreshScope, sessionLockName, withScopedReads } from '../lib/lock/lock-scope.js';
import { createLockConnection, createRedlockRequestLock } from '../lib/redis/redis-lock.factory.js';
import { createTestDatabase } from '../test/support/databases.js';
import { installTestKeyRing } from '../test/support/key-ring.js';
import { randomDid, sessionValue } from '../test/support/raw-sql.js';

const ROUNDS = 7;
const PER_ROUND = 400;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

it('restore of a fresh session: Redlock vs the no-refresh scope', async () => {
  installTestKeyRing();
  const db = await createTestDatabase('postgres', 'bench_lock');
  const ds = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
  });
  await ds.initialize();
  await ds.runMigrations();
  const connection = await createLockConnection('redis://127.0.0.1:6379');
  try {
    const lock = await createRedlockRequestLock(connection);
    const store = new TypeOrmSessionStore(ds, { ttlMs: 86_400_000 });
    const did = randomDid();
    await store.set(did, sessionValue(did));
    const name = sessionLockName(did);

    // The client reads through the same wrapper the module gives it.
    const clientStore = withScopedReads(store);
    const locked = async () => {
      await lock.run(name, () => clientStore.get(did));
    };
    const skip = async () => {
      const session = (await store.get(did))!; // the module's freshness check
      const scope = { lockName: name, did, session };
      await noRefreshScope.run(scope, () => lock.run(name, () => clientStore.get(did)));
    };
    for (let i = 0; i < 200; i++) {
      await locked();
      await skip();
    }
    const times: Record<string, number[]> = { locked: [], skip: [] };
    for (let r = 0; r < ROUNDS; r++) {
      for (const [label, fn] of [
        ['locked', locked],
        ['skip', skip],
      ] as const) {
        const t0 = performance.now();
        for (let i = 0; i < PER_ROUND; i++) await fn();
        times[label]!.push(((performance.now() - t0) * 1000) / PER_ROUND);
      }
    }
    const locked_us = median(times.locked!);
    const skip_us = median(times.skip!);
    console.log(
      `restore-lock: locked ${locked_us.toFixed(0)} µs/op, skip ${skip_us.toFixed(0)} µs/op, ` +
        `skip/locked = ${(skip_us / locked_us).toFixed(2)}×, rounds=${ROUNDS}×${PER_ROUND}`,
    );
    expect(locked_us).toBeGreaterThan(0);
  } finally {
    connection.disconnect();
    await ds.destroy();
    await db.drop();
  }
});
