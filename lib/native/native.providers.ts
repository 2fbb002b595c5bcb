import type { Provider } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import {
  AT_PROTO_APP_SESSION_STORE,
  AT_PROTO_DATA_SOURCE,
  AT_PROTO_OPTIONS,
} from '../at-proto.constants.js';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import { MemoryNativeStore } from '../storage/memory/memory-native.store.js';
import type { AppSessionStore } from '../storage/store.interface.js';
import { TypeOrmNativeStore } from '../storage/typeorm/typeorm-native.store.js';
import type { NativeTokenStore } from './native-store.interface.js';
import { AtProtoNativeService } from './native.service.js';
import { AT_PROTO_NATIVE_STORE } from './native.constants.js';

/**
 * The store of native codes and refresh families for the module's storage choice: in
 * memory with `storage: 'memory'` (its cleanup asks the app-session store which sessions
 * are gone), else on the app's TypeORM DataSource, next to the app sessions.
 * @internal
 */
export function createNativeStore(
  options: ResolvedAtProtoOptions,
  dataSource: DataSource | null,
  appSessions: AppSessionStore,
): NativeTokenStore {
  if (options.storage === 'memory') return new MemoryNativeStore({ appSessions });
  if (!dataSource) {
    throw new AtProtoConfigError(
      ['native apps need the TypeORM DataSource (or storage: "memory"): none was found.'],
      'AtProtoModule storage',
    );
  }
  return new TypeOrmNativeStore(dataSource, { retry: options.storeRetry });
}

/**
 * What native apps add to the module's providers: the store (`AT_PROTO_NATIVE_STORE`) and
 * `AtProtoNativeService`. Both are cheap when `native` is not set (the store is built but
 * never used; the service says `enabled: false`).
 * @internal
 */
export const atProtoNativeProviders: Provider[] = [
  {
    provide: AT_PROTO_NATIVE_STORE,
    inject: [AT_PROTO_OPTIONS, AT_PROTO_DATA_SOURCE, AT_PROTO_APP_SESSION_STORE],
    useFactory: createNativeStore,
  },
  AtProtoNativeService,
];
