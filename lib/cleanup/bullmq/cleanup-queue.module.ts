import { AtProtoConfigError } from '../../errors/at-proto-config.error.js';
// Loaded only when the module's `bullmq` extra is set (see at-proto.module-definition.ts):
// it is the one place that imports @nestjs/bullmq and bullmq, which are optional peers.
import { BullModule, InjectQueue, Processor, WorkerHost } from '@nestjs/bullmq';
import {
  type DynamicModule,
  Inject,
  Injectable,
  Logger,
  Module,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import type { Queue } from 'bullmq';
import { AT_PROTO_OPTIONS } from '../../at-proto.constants.js';
import type { ResolvedAtProtoOptions } from '../../options/resolved-options.js';
import { AtProtoCleanupService } from '../at-proto-cleanup.service.js';
import type { CleanupResult } from '../cleanup.interface.js';
import { AT_PROTO_CLEANUP_QUEUE } from '../../at-proto.internal-constants.js';

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
  constructor(private readonly cleanup: AtProtoCleanupService) {
    super();
  }

  async process(): Promise<CleanupResult> {
    return this.cleanup.runOnce();
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
      providers: [AtProtoCleanupProcessor, AtProtoCleanupScheduler],
    };
  }
}
