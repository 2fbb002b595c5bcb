/**
 * Boots the sample app (sample/src/app.ts) in this process, as `node sample/dist/main.js`
 * would, against the in-process PDS of the e2e harness, on a temp SQLite file.
 * @internal
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { INestApplication, LoggerService, LogLevel } from '@nestjs/common';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSampleApp, type SampleEnv } from '../../sample/src/app.js';
import type { TestPds } from '../e2e/support/pds.js';

export interface RunningSample {
  app: INestApplication;
  /** `http://127.0.0.1:PORT`: the loopback client's origin (its publicUrl). */
  url: string;
  /** Temp directory holding the SQLite file. */
  dir: string;
  close(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (the sample's publicUrl needs it before the app is built). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.unref();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** The env that points the sample at the local PDS (what `npm run sample:pds` prints). */
export function localPdsEnv(pds: TestPds): SampleEnv {
  return {
    ATPROTO_HANDLE_RESOLVER: pds.url,
    ATPROTO_PLC_URL: pds.plcUrl,
    ATPROTO_ALLOW_HTTP: '1',
    ATPROTO_PRIVATE_HOSTS: `${new URL(pds.url).host},${new URL(pds.plcUrl).host}`,
  };
}

export async function startSample(
  pds: TestPds,
  options: { env?: SampleEnv; logger?: LoggerService | LogLevel[] } = {},
): Promise<RunningSample> {
  const dir = await mkdtemp(join(tmpdir(), 'sample-e2e-'));
  try {
    const port = await freePort();
    const env: SampleEnv = {
      PORT: String(port),
      DATABASE_PATH: join(dir, 'sample.sqlite'),
      SAMPLE_DATA_DIR: dir,
      ATPROTO_ENC_KEY: randomBytes(32).toString('base64'),
      ...localPdsEnv(pds),
      ...options.env,
    };
    const app = await createSampleApp(env, { logger: options.logger ?? ['error'] });
    try {
      await app.listen(port, '127.0.0.1');
    } catch (error) {
      await app.close();
      throw error;
    }
    return {
      app,
      url: `http://127.0.0.1:${port}`,
      dir,
      close: async () => {
        try {
          await app.close();
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
