// Boots AtProtoModule with inbound service auth configured (serviceAuth.serviceDid), in an
// application context, and prints what happened as one JSON line: { booted } or
// { name, code, message } of the boot error.
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Module, type DynamicModule } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AtProtoModule } from 'nestjs-atproto-auth';

const key = randomBytes(32).toString('base64');

@Module({
  imports: [
    AtProtoModule.forRoot({
      publicUrl: 'http://127.0.0.1:3000',
      encryption: { activeKeyId: 'k', keys: { k: key } },
      storage: 'memory',
      serviceAuth: { serviceDid: 'did:web:api.example.com' },
    }) as DynamicModule,
  ],
})
class BootModule {}

try {
  const app = await NestFactory.createApplicationContext(BootModule, {
    logger: false,
    abortOnError: false,
  });
  await app.close();
  console.log(JSON.stringify({ booted: true }));
} catch (error) {
  const { name, code, message } = error as { name: string; code?: string; message: string };
  console.log(JSON.stringify({ name, code, message }));
}
