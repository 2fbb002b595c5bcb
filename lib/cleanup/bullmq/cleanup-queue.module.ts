import { AtProtoConfigError } from '../../errors/at-proto-config.error.js';
// Loaded only when the module's `bullmq` extra is set (see at-proto.module-definition.ts):
// it is the one place that imports @nestjs/bullmq and bullmq, which are optional peers.
import { BullModule, InjectQueue, Processor, WorkerHost } from '@nestjs/bullmq';
import {
  type BeforeApplicationShutdown,
  type DynamicModule,
  Inject,
  Injectable,
  Logger,
  Module,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import type { Queue, Worker } from 'bullmq';
import { AT_PROTO_OPTIONS } from '../../at-proto.constants.js';
import type { ResolvedAtProtoOptions } from '../../options/resolved-options.js';
import { AtProtoCleanupService } from '../at-proto-cleanup.service.js';
import type { CleanupResult } from '../cleanup.interface.js';
import { AT_PROTO_CLEANUP_QUEUE } from '../../at-proto.internal-constants.js';
import {
  type ClosableRedis,
  closeRedisClient,
  REDIS_SHUTDOWN_STEP_MS,
  settlesWithin,
  stopReconnecting,
} from '../../redis/redis-shutdown.js';

export { AT_PROTO_CLEANUP_QUEUE };
/** Id of its job scheduler (one per queue, shared by every instance). @internal */
export const AT_PROTO_CLEANUP_SCHEDULER = 'atproto-cleanup-every';
/** BullMQ config key, so the app's own BullModule.forRoot() is left alone. @internal */
const CONFIG_KEY = 'atproto-auth';

/**
 * The BullMQ connection options for `redis`. Workers need `maxRetriesPerRequest: null`
 * (they block on Redis), the opposite of the session lock's fail-fast connection, so BullMQ
 * gets connections of its own.
 * @internal
 */
export function bullConnection(redisUrl: string): Record<string, unknown> {
  const url = new URL(redisUrl);
  const db = url.pathname.replace(/^\//, '');
  return {
    host: url.hostname,
    port: url.port ? Number(url.port) : 6379,
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(db ? { db: Number(db) } : {}),
    ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
}

/**
 * Runs a cleanup for each job the scheduler creates. However many instances run a worker,
 * BullMQ hands each job to exactly one of them.
 * @internal
 */
@Processor({ name: AT_PROTO_CLEANUP_QUEUE, configKey: CONFIG_KEY })
export class AtProtoCleanupProcessor extends WorkerHost {
  /** The run of the job under way, waited for at shutdown. */
  #current: Promise<unknown> | undefined;

  constructor(private readonly cleanup: AtProtoCleanupService) {
    super();
  }

  async process(): Promise<CleanupResult> {
    const run = this.cleanup.runOnce();
    this.#current = run;
    try {
      return await run;
    } finally {
      if (this.#current === run) this.#current = undefined;
    }
  }

  /** Whether this worker is running a job. @internal */
  get busy(): boolean {
    return this.#current !== undefined;
  }

  /** Resolves once the job this worker is running, if any, has run (never rejects). @internal */
  async idle(): Promise<void> {
    await this.#current?.catch(() => undefined);
  }
}

/**
 * The worker's (or queue's) ioredis clients, as BullMQ 6 exposes them (its backend's
 * `client` and `blockingClient`) or BullMQ 5 holds them (`client`, and the worker's
 * `blockingConnection`). Each is a promise of BullMQ's that waits for the first
 * connection, so each is given one step; one not known by then is left to BullMQ.
 */
async function bullClients(owner: Worker | Queue): Promise<ClosableRedis[]> {
  interface Held {
    client?: Promise<unknown>;
    blockingClient?: Promise<unknown>;
    blockingConnection?: { client?: Promise<unknown> };
  }
  const holder = owner as unknown as Held & { getBackend?: () => Held };
  const held = typeof holder.getBackend === 'function' ? holder.getBackend() : holder;
  const pending = [held.client, held.blockingClient ?? holder.blockingConnection?.client];
  const clients: ClosableRedis[] = [];
  for (const promise of pending) {
    let client: unknown;
    if (promise)
      await settlesWithin(
        promise.then((c) => (client = c)),
        REDIS_SHUTDOWN_STEP_MS,
      );
    if (isClosable(client)) clients.push(client);
  }
  return clients;
}

function isClosable(client: unknown): client is ClosableRedis {
  const c = client as Partial<Record<keyof ClosableRedis, unknown>> | null;
  return (
    typeof c?.status === 'string' &&
    typeof c.options === 'object' &&
    typeof c.connect === 'function' &&
    typeof c.disconnect === 'function'
  );
}

/**
 * Closes the cleanup worker and queue before @nestjs/bullmq's shutdown hooks close them
 * again (which then find them closed). Left to BullMQ, closing waits on Redis for as long
 * as it is down: the worker waits for its blocking connection to end, which ioredis never
 * reports for a connection waiting to reconnect, and QUIT waits in the offline queue for a
 * reconnection. Here:
 * - no BullMQ connection reconnects any more, and those not connected are ended at once
 *   (what they held is rejected);
 * - a cleanup job under way is waited for, as a clean close does (its work is in the
 *   database), then BullMQ records its result and quits within a step
 *   ({@link REDIS_SHUTDOWN_STEP_MS}); past that, its connections are closed (a job whose
 *   result could not be recorded is run again later: cleanup is idempotent).
 * @internal
 */
@Injectable()
export class AtProtoCleanupQueueShutdown implements BeforeApplicationShutdown {
  readonly #logger = new Logger('AtProtoCleanup');

  constructor(
    private readonly processor: AtProtoCleanupProcessor,
    @InjectQueue(AT_PROTO_CLEANUP_QUEUE) private readonly queue: Queue,
  ) {}

  async beforeApplicationShutdown(): Promise<void> {
    const owners: Array<Worker | Queue> = [this.queue];
    try {
      owners.push(this.processor.worker);
    } catch {
      // No worker was made (the app closes during boot): only the queue to close.
    }
    const clients = (await Promise.all(owners.map(bullClients))).flat();
    for (const client of clients) stopReconnecting(client);
    const closed = Promise.allSettled(owners.map((owner) => owner.close()));
    // Not connected: nothing to wait for (a reconnection is tried once, now).
    const ending = clients
      .filter((client) => client.status !== 'ready')
      .map((client) => closeRedisClient(client));
    await this.processor.idle();
    let closedInTime: boolean;
    for (;;) {
      closedInTime = await settlesWithin(closed, REDIS_SHUTDOWN_STEP_MS);
      // A job fetched just before the close may have started since: waited for too.
      if (closedInTime || !this.processor.busy) break;
      await this.processor.idle();
    }
    if (!closedInTime) {
      this.#logger.warn(
        'BullMQ did not close within its bound (Redis unreachable or not answering): ' +
          'its connections are closed without waiting for Redis.',
      );
      // BullMQ's QUITs went unanswered: no second one.
      for (const client of clients) ending.push(closeRedisClient(client, { quit: false }));
    }
    await Promise.all(ending);
    await closed;
  }
}

/**
 * Upserts the job scheduler at boot (`upsertJobScheduler`: idempotent, so every instance
 * may do it; the interval follows the latest configuration).
 * @internal
 */
@Injectable()
export class AtProtoCleanupScheduler implements OnApplicationBootstrap {
  readonly #logger = new Logger('AtProtoCleanup');

  constructor(
    @InjectQueue(AT_PROTO_CLEANUP_QUEUE) private readonly queue: Queue,
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    if (!this.options.cleanup.enabled) {
      await this.queue.removeJobScheduler(AT_PROTO_CLEANUP_SCHEDULER);
      return;
    }
    await this.queue.upsertJobScheduler(
      AT_PROTO_CLEANUP_SCHEDULER,
      { every: this.options.cleanup.intervalMs },
      { name: 'cleanup', opts: { removeOnComplete: 100, removeOnFail: 100 } },
    );
    this.#logger.log(`Cleanup scheduled every ${this.options.cleanup.intervalMs} ms with BullMQ.`);
  }
}

/**
 * BullMQ wiring of cleanup, imported by `AtProtoModule` when its `bullmq` extra is set.
 * The Redis URL only exists once the options factory has run, so the connection is given
 * through `BullModule.forRootAsync`, which injects the module's resolved options (the
 * module is global, so they are visible here).
 * @internal
 */
@Module({})
export class AtProtoCleanupQueueModule {
  static register(): DynamicModule {
    return {
      module: AtProtoCleanupQueueModule,
      imports: [
        BullModule.forRootAsync(CONFIG_KEY, {
          inject: [AT_PROTO_OPTIONS],
          useFactory: (options: ResolvedAtProtoOptions) => {
            if (!options.redis) {
              // Checked with the other options at boot; kept for a wiring mistake.
              throw new AtProtoConfigError([
                'bullmq: true needs the redis option (a redis:// URL) for BullMQ to run on',
              ]);
            }
            return {
              connection: bullConnection(options.redis),
              prefix: `${options.redisKeyPrefix}bull`,
            };
          },
        }),
        BullModule.registerQueue({ name: AT_PROTO_CLEANUP_QUEUE, configKey: CONFIG_KEY }),
      ],
      providers: [AtProtoCleanupProcessor, AtProtoCleanupScheduler, AtProtoCleanupQueueShutdown],
    };
  }
}
