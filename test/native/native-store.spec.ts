import { MemoryAppSessionStore, TypeOrmAppSessionStore } from 'nestjs-atproto-auth';
import { MemoryNativeStore } from '../../lib/storage/memory/memory-native.store.js';
import { TypeOrmNativeStore } from '../../lib/storage/typeorm/typeorm-native.store.js';
import { defineNativeStoreConformanceTests } from '../../lib/testing/native-store-conformance.js';
import { DIALECTS } from '../support/databases.js';
import { twoInstancesOn } from './support/data-sources.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

defineNativeStoreConformanceTests({
  name: 'memory',
  createStores: async () => {
    const appSessions = new MemoryAppSessionStore();
    const store = new MemoryNativeStore({ appSessions });
    return { store, second: store, appSessions };
  },
});

for (const dialect of DIALECTS) {
  defineNativeStoreConformanceTests({
    name: `typeorm on ${dialect}`,
    createStores: async () => {
      const { first, second, close } = await twoInstancesOn(dialect, 'native_store');
      cleanups.push(close);
      return {
        store: new TypeOrmNativeStore(first),
        second: new TypeOrmNativeStore(second),
        appSessions: new TypeOrmAppSessionStore(first),
      };
    },
  });
}
