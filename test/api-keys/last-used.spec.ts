/**
 * `last_used_at` under load, on SQLite, PostgreSQL and MariaDB: 1,000 validations of one key
 * on two service instances (each with its own store and DataSource on one database) write it
 * exactly once in an `apiKeys.lastUsedInterval` window, and once more after the window. The
 * stored value proves which validation wrote: the clock moves on between rounds, so a second
 * write in the window would leave a later instant.
 */
import { jest } from '@jest/globals';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { AtProtoApiKeyService } from '../../lib/api-keys/api-key.service.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import { TypeOrmApiKeyStore } from '../../lib/storage/typeorm/typeorm-api-key.store.js';
import { createTestDatabase, DIALECTS } from '../support/databases.js';
import { randomDid } from '../support/raw-sql.js';

const INTERVAL = 5 * 60_000;
const VALIDATIONS = 1000;
const ROUNDS = 20; // of 50 concurrent validations, 25 on each instance
const T0 = Date.parse('2026-11-22T10:00:00Z');

/** A store that counts the last-use writes it made, and those still under way. */
class CountingStore extends TypeOrmApiKeyStore {
  writes = 0;
  pending = 0;
  override async touch(id: string, at: Date, staleBefore: Date): Promise<boolean> {
    this.pending++;
    try {
      const wrote = await super.touch(id, at, staleBefore);
      if (wrote) this.writes++;
      return wrote;
    } finally {
      this.pending--;
    }
  }
}

function optionsWith(cacheTtlMs: number): ResolvedAtProtoOptions {
  return {
    appSession: { cacheTtlMs },
    apiKeys: { prefix: 'atp_', lastUsedIntervalMs: INTERVAL, revokedGraceMs: 86_400_000 },
  } as unknown as ResolvedAtProtoOptions;
}

describe.each(DIALECTS)('last use of an API key on %s', (dialect) => {
  let dataSources: DataSource[] = [];
  let drop: () => Promise<void>;
  let dbOptions: DataSourceOptions;

  beforeAll(async () => {
    const db = await createTestDatabase(dialect, 'api_key_last_used');
    drop = db.drop;
    dbOptions = db.options;
    const first = new DataSource({
      ...dbOptions,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
      migrationsRun: true,
    });
    await first.initialize();
    const second = new DataSource({ ...dbOptions, entities: [...atProtoEntities] });
    await second.initialize();
    dataSources = [first, second];
  });
  afterAll(async () => {
    jest.useRealTimers();
    for (const ds of dataSources) await ds.destroy();
    await drop?.();
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  it.each([0, 2000])(
    'is written once per window under 1,000 validations on two instances (cache TTL %i ms)',
    async (cacheTtlMs) => {
      // Only Date is faked: the drivers' timers and sockets run as usual.
      jest.useFakeTimers({
        now: T0,
        doNotFake: [
          'hrtime',
          'nextTick',
          'performance',
          'queueMicrotask',
          'requestAnimationFrame',
          'cancelAnimationFrame',
          'requestIdleCallback',
          'cancelIdleCallback',
          'setImmediate',
          'clearImmediate',
          'setInterval',
          'clearInterval',
          'setTimeout',
          'clearTimeout',
        ],
      });
      const stores = dataSources.map((ds) => new CountingStore(ds));
      const services = stores.map((s) => new AtProtoApiKeyService(optionsWith(cacheTtlMs), s));
      const { key, info } = await services[0]!.create(randomDid(), { name: 'busy bot' });
      const writes = () => stores.reduce((n, s) => n + s.writes, 0);
      const settled = async () => {
        for (let i = 0; i < 400 && stores.some((s) => s.pending > 0); i++) {
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        expect(stores.every((s) => s.pending === 0)).toBe(true);
      };
      const lastUsed = async () => (await stores[0]!.get(info.id))?.lastUsedAt?.getTime();

      /** 1,000 validations from `start`, the clock moving 100 ms between rounds. */
      const burst = async (start: number) => {
        for (let round = 0; round < ROUNDS; round++) {
          jest.setSystemTime(start + round * 100);
          const results = await Promise.all(
            Array.from({ length: VALIDATIONS / ROUNDS }, (_, i) => services[i % 2]!.validate(key)),
          );
          expect(results.every((r) => r?.id === info.id)).toBe(true);
        }
        await settled();
      };

      await burst(T0);
      expect(writes()).toBe(1);
      expect(await lastUsed()).toBe(T0); // written by a validation of the first round

      // Past the window: once more, by the first round again.
      const T1 = T0 + INTERVAL + 1;
      await burst(T1);
      expect(writes()).toBe(2);
      expect(await lastUsed()).toBe(T1);
    },
  );
});
