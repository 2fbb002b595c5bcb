/**
 * Boots AtProtoModule (memory storage; REDIS_URL optional) in a process of its own, prints
 * where invalidation stands once it is proven, then closes the app (CLOSE=1) or just stops
 * doing anything. The test checks that the process then exits by itself.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AtProtoModule } from 'nestjs-atproto-auth';
import { AtProtoCacheInvalidation } from '../../../lib/invalidation/cache-invalidation.js';

@Module({
  imports: [
    AtProtoModule.forRoot({
      publicUrl: 'http://127.0.0.1:4321',
      encryption: { activeKeyId: 'k', keys: { k: randomBytes(32).toString('base64') } },
      storage: 'memory',
      ...(process.env.REDIS_URL ? { redis: process.env.REDIS_URL } : {}),
      cleanup: { enabled: false },
    }),
  ],
})
class ProbeModule {}

const app = await NestFactory.create(ProbeModule, { logger: ['error'] });
await app.init();
const bus = app.get(AtProtoCacheInvalidation, { strict: false });
for (let i = 0; i < 100 && !bus.state().trusted; i++) await sleep(50);
console.log(`STATE ${JSON.stringify(bus.state())}`);
if (process.env.CLOSE === '1') await app.close();
