/**
 * Boots AtProtoModule with `redis` (session lock, Redis stores and caches, invalidation
 * channel, BullMQ cleanup) in a process of its own, prints `READY` once the invalidation
 * channel is proven (every connection works) and `REDIS LOST` once the lock connection
 * failed to reconnect twice (by then every connection of the module knows that Redis is
 * gone: they lost it at the same moment), then follows orders read from stdin:
 * - `close`: calls app.close(), printing `CLOSING` first and `CLOSED` once it resolved;
 * - `go` (with HOLD_CLOSE=1): the close, held at its first hook (the app's own
 *   onModuleDestroy, before any of the module's), goes on.
 * The test then expects the process to exit by itself: nothing of the module left running.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Injectable, Module, type OnModuleDestroy } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AtProtoModule } from 'nestjs-atproto-auth';
import { AT_PROTO_LOCK_CONNECTION } from '../../../lib/at-proto.internal-constants.js';
import { AtProtoCacheInvalidation } from '../../../lib/invalidation/cache-invalidation.js';

const redis = process.env.REDIS_URL;
if (!redis) throw new Error('REDIS_URL is required');

const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
async function order(name: string): Promise<void> {
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new Error(`stdin closed before "${name}"`);
    if (value === name) return;
  }
}

/** Holds the close (HOLD_CLOSE=1) until the test has restarted Redis. */
@Injectable()
class HoldClose implements OnModuleDestroy {
  async onModuleDestroy(): Promise<void> {
    if (process.env.HOLD_CLOSE === '1') await order('go');
  }
}

@Module({
  imports: [
    AtProtoModule.forRoot({
      publicUrl: 'http://127.0.0.1:4321',
      encryption: { activeKeyId: 'k', keys: { k: randomBytes(32).toString('base64') } },
      storage: 'memory',
      redis,
      bullmq: true,
      cleanup: { enabled: true, interval: 60_000 },
    }),
  ],
  providers: [HoldClose],
})
class ProbeModule {}

const app = await NestFactory.create(ProbeModule, { logger: ['error'] });
await app.init();
const bus = app.get(AtProtoCacheInvalidation, { strict: false });
for (let i = 0; i < 100 && bus.state().channel !== 'proven'; i++) await sleep(50);
console.log(`READY ${JSON.stringify(bus.state())}`);
let reconnections = 0;
app.get<EventEmitter>(AT_PROTO_LOCK_CONNECTION, { strict: false }).on('reconnecting', () => {
  if (++reconnections === 2) console.log('REDIS LOST');
});

await order('close');
console.log('CLOSING');
await app.close();
console.log('CLOSED');
// Lets stdin go, so that only what the app left running can keep the process alive.
input.close();
