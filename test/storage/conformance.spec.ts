import { DataSource } from 'typeorm';
import {
  atProtoEntities,
  MemorySessionStore,
  MemoryStateStore,
  atProtoMigrations,
  TypeOrmSessionStore,
  TypeOrmStateStore,
} from 'nestjs-atproto-auth';
import { defineStoreConformanceTests } from 'nestjs-atproto-auth/testing';
import { createTestDatabase, DIALECTS } from '../support/databases.js';
import { installTestKeyRing } from '../support/key-ring.js';

installTestKeyRing();

defineStoreConformanceTests({
  name: 'memory',
  createStateStore: (ctx) => new MemoryStateStore(ctx),
  createSessionStore: (ctx) => new MemorySessionStore(ctx),
  fencedWrites: true,
  sessionInfo: true,
});

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

for (const dialect of DIALECTS) {
  let ds: Promise<DataSource> | undefined;
  const dataSource = () =>
    (ds ??= (async () => {
      const db = await createTestDatabase(dialect, 'conformance');
      const source = new DataSource({
        ...db.options,
        entities: [...atProtoEntities],
        migrations: atProtoMigrations(),
        migrationsRun: true,
      });
      await source.initialize();
      cleanups.push(async () => {
        await source.destroy();
        await db.drop();
      });
      return source;
    })());
  defineStoreConformanceTests({
    name: `typeorm on ${dialect}`,
    createStateStore: async (ctx) => new TypeOrmStateStore(await dataSource(), ctx),
    createSessionStore: async (ctx) => new TypeOrmSessionStore(await dataSource(), ctx),
    fencedWrites: true,
    sessionInfo: true,
  });
}

describe('the conformance suite itself: fenced-write cases', () => {
  /** Registers the suite for `store` with a test API that collects the cases. */
  function collect(store: object, fencedWrites?: boolean) {
    const cases: Array<{ name: string; body: () => Promise<void> }> = [];
    let prefix = '';
    defineStoreConformanceTests({
      name: 'probe',
      createSessionStore: () => store as MemorySessionStore,
      fencedWrites,
      testApi: {
        describe: (name, body) => {
          prefix = name;
          body();
        },
        it: (name, body) => cases.push({ name: `${prefix} ${name}`, body }),
      },
    });
    return cases.filter((c) => c.name.includes('fenced writes'));
  }
  const plain = () => {
    const full = new MemorySessionStore({ ttlMs: 60_000 });
    return {
      get: (k: string) => full.get(k),
      set: (k: string, v: Parameters<MemorySessionStore['set']>[1]) => full.set(k, v),
      del: (k: string) => full.del(k),
    };
  };

  it('fails a store that has only some of getVersioned, setIfVersion and delIfVersion', async () => {
    const partial = { ...plain(), getVersioned: async () => undefined };
    const cases = collect(partial);
    expect(cases.length).toBeGreaterThan(5);
    for (const c of cases) await expect(c.body()).rejects.toThrow(/only some of them/);
  });

  it('with fencedWrites: true, fails a store that has none of them', async () => {
    for (const c of collect(plain(), true)) {
      await expect(c.body()).rejects.toThrow(/must implement getVersioned/);
    }
  });

  it('by default passes a store that has none of them (the module falls back to get/set/del), and leaves the cases out with fencedWrites: false', async () => {
    const cases = collect(plain());
    expect(cases.length).toBeGreaterThan(5);
    for (const c of cases) await c.body();
    expect(collect(plain(), false)).toEqual([]);
  });
});
