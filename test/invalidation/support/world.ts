/**
 * "Instances" of the module's caches inside one test process: each its own
 * AtProtoCacheInvalidation (subscriber, heartbeats, cursor), AppSessionService and
 * AtProtoApiKeyService, all over one pair of memory stores (the shared database), on a
 * redis-server of the test's own.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { AtProtoCacheInvalidation } from '../../../lib/invalidation/cache-invalidation.js';
import { AtProtoApiKeyService } from '../../../lib/api-keys/api-key.service.js';
import type { AtProtoApiKeyRecord } from '../../../lib/api-keys/api-key.store.js';
import type { ResolvedAtProtoOptions } from '../../../lib/options/resolved-options.js';
import {
  createLockConnection,
  type RedisClientLike,
} from '../../../lib/redis/redis-lock.factory.js';
import { AppSessionService } from '../../../lib/session/app-session.service.js';
import { MemoryApiKeyStore } from '../../../lib/storage/memory/memory-api-key.store.js';
import { MemoryAppSessionStore } from '../../../lib/storage/memory/memory.stores.js';
import type { AppSessionRecord } from '../../../lib/storage/store.interface.js';

export const DID = 'did:plc:alice234567abcdefghijklm';

type Revoked = Array<{ id: string; did: string; revokedAt: Date }>;

/** A shared API key store that counts reads. */
export class SharedKeys extends MemoryApiKeyStore {
  reads = 0;
  override async get(id: string): Promise<AtProtoApiKeyRecord | undefined> {
    this.reads++;
    return super.get(id);
  }
}

/** One instance's view of the shared key store: its cursor follows the session store's switch. */
class InstanceKeys {
  constructor(
    private readonly shared: SharedKeys,
    private readonly sessions: InstanceSessions,
  ) {}
  create = (r: AtProtoApiKeyRecord) => this.shared.create(r);
  get = (id: string) => this.shared.get(id);
  listForDid = (did: string) => this.shared.listForDid(did);
  revoke = (id: string, did: string, at: Date) => this.shared.revoke(id, did, at);
  touch = (id: string, at: Date, staleBefore: Date) => this.shared.touch(id, at, staleBefore);
  hasActive = (did: string, now: Date) => this.shared.hasActive(did, now);
  revokedSince = async (since: Date, limit: number): Promise<Revoked> => {
    if (this.sessions.cursor === 'failing') throw new Error('cursor query failed (test)');
    if (this.sessions.cursor === 'blind') return [];
    return this.shared.revokedSince(since, limit);
  };
}

/** The shared app-session "database", counting reads, with switches for the tests. */
export class SharedSessions extends MemoryAppSessionStore {
  reads = 0;
  override async get(id: string): Promise<AppSessionRecord | undefined> {
    this.reads++;
    return super.get(id);
  }
}

/**
 * One instance's view of the shared stores: its own read gate (to hold a read in flight)
 * and its own cursor behaviour (`blind`: answers with no rows, as if nothing was revoked;
 * `failing`: the query fails).
 */
export class InstanceSessions {
  gate: Promise<void> | undefined;
  cursor: 'normal' | 'blind' | 'failing' = 'normal';
  constructor(private readonly shared: SharedSessions) {}
  create = (r: AppSessionRecord) => this.shared.create(r);
  touch = (id: string, at: Date) => this.shared.touch(id, at);
  revoke = (id: string, at: Date) => this.shared.revoke(id, at);
  revokeAllForDid = (did: string, at: Date) => this.shared.revokeAllForDid(did, at);
  listForDid = (did: string) => this.shared.listForDid(did);
  get = async (id: string): Promise<AppSessionRecord | undefined> => {
    const record = await this.shared.get(id); // read before whatever happens meanwhile
    await this.gate;
    return record;
  };
  revokedSince = async (since: Date, limit: number): Promise<Revoked> => {
    if (this.cursor === 'failing') throw new Error('cursor query failed (test)');
    if (this.cursor === 'blind') return [];
    return this.shared.revokedSince(since, limit);
  };
}

export interface Instance {
  bus: AtProtoCacheInvalidation;
  sessions: AppSessionService;
  keys: AtProtoApiKeyService;
  store: InstanceSessions;
  publisher: RedisClientLike | null;
  close(): Promise<void>;
}

export function options(
  redis: string | undefined,
  cacheTtlMs: number,
  prefix = 'inv:',
): ResolvedAtProtoOptions {
  return {
    redis,
    redisKeyPrefix: prefix,
    storeRetry: undefined,
    appSession: {
      idleTtlMs: 86_400_000,
      absoluteTtlMs: 10 * 86_400_000,
      cacheTtlMs,
      cacheMaxEntries: 100_000,
      invalidatedCacheTtlMs: 300_000,
    },
    apiKeys: { prefix: 'atp_', lastUsedIntervalMs: 3_600_000, revokedGraceMs: 86_400_000 },
  } as unknown as ResolvedAtProtoOptions;
}

/**
 * Starts an instance. `subscriberUrl` is where its subscriber connects (the module's
 * `redis`), `publisherUrl` its lock connection (publishes): both `redis` unless a test puts
 * a proxy in front of one of them.
 */
export async function startInstance(
  shared: { sessions: SharedSessions; keys: SharedKeys },
  redis: { subscriberUrl?: string; publisherUrl?: string } | undefined,
  cacheTtlMs = 1000,
): Promise<Instance> {
  const o = options(redis?.subscriberUrl, cacheTtlMs);
  const publisher = redis?.publisherUrl ? await createLockConnection(redis.publisherUrl) : null;
  const store = new InstanceSessions(shared.sessions);
  const keys = new InstanceKeys(shared.keys, store);
  const bus = new AtProtoCacheInvalidation(o, publisher, store, keys);
  await bus.onModuleInit();
  return {
    bus,
    sessions: new AppSessionService(o, store, bus),
    keys: new AtProtoApiKeyService(o, keys, bus),
    store,
    publisher,
    close: async () => {
      await bus.onApplicationShutdown();
      publisher?.disconnect();
    },
  };
}

/** Polls `probe` every 20 ms until it holds; how long that took (throws after `ms`). */
export async function within(ms: number, what: string, probe: () => Promise<boolean> | boolean) {
  const start = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - start;
    if (Date.now() - start > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(20);
  }
}

/** Waits until the instance gives the long lifetime (channel and cursor proven). */
export function trusted(instance: Instance, ms = 10_000): Promise<number> {
  return within(ms, 'channel and cursor proven', () => instance.bus.state().trusted);
}
