import { DataSource, type DataSourceOptions } from 'typeorm';
import { atProtoEntities, type TransientRetryOptions } from 'nestjs-atproto-auth';
import { CuttingProxy } from '../storage/fault-proxy.js';
import { migratedDataSource } from './databases.js';

/**
 * A migrated database reached two ways: `direct`, and `viaProxy` through a
 * {@link CuttingProxy} that can lose the reply to one statement (or cut before it), so that
 * a store on `viaProxy` sees an ambiguous failure and retries. `retry` is a fast retry
 * policy for such stores that records every error it retries in `retried` (clear it
 * between tests). `close` destroys both DataSources, stops the proxy and drops the database.
 *
 * @internal
 */
export interface LostReplyDatabase {
  direct: DataSource;
  viaProxy: DataSource;
  proxy: CuttingProxy;
  retry: TransientRetryOptions;
  retried: unknown[];
  close: () => Promise<void>;
}

/**
 * Creates a {@link LostReplyDatabase} on a fresh database of its own.
 *
 * @internal
 */
export async function lostReplyDatabase(
  dialect: 'postgres' | 'mariadb',
  label: string,
): Promise<LostReplyDatabase> {
  const retried: unknown[] = [];
  const retry: TransientRetryOptions = {
    baseDelayMs: 20,
    maxElapsedMs: 10_000,
    onRetry: (error) => retried.push(error),
  };
  const db = await migratedDataSource(dialect, label);
  let proxy: CuttingProxy | undefined;
  let viaProxy: DataSource | undefined;
  const close = async () => {
    // Connections the proxy cut may fail to end cleanly; only ending the pool matters here.
    await viaProxy?.destroy().catch(() => undefined);
    await proxy?.close();
    await db.close();
  };
  try {
    proxy = await CuttingProxy.start({
      host: '127.0.0.1',
      port: dialect === 'postgres' ? 5432 : 3306,
    });
    const through = new DataSource({
      ...db.options,
      port: proxy.port,
      entities: [...atProtoEntities],
    } as DataSourceOptions);
    await through.initialize();
    viaProxy = through;
  } catch (error) {
    // Setup failed half way: nobody else holds what was made, so undo it here.
    await close();
    throw error;
  }
  return { direct: db.dataSource, viaProxy, proxy, retry, retried, close };
}
