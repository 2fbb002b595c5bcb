import { readFile } from 'node:fs/promises';
import { type INestApplication, Logger, type LoggerService, type LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AppModule, SAMPLE_CONFIG } from './app.module.js';
import { resolveSampleConfig, type SampleConfig, type SampleEnv } from './config.js';
import type { SampleResponse } from './http.js';

export { SAMPLE_CONFIG };
export type { SampleConfig, SampleEnv };

export interface CreateSampleAppOptions {
  /** Nest logger (default: Nest's console logger). */
  logger?: LoggerService | LogLevel[] | false;
}

/**
 * Builds the sample app from environment variables (see README.md), without listening:
 * `main.ts` listens on `app.get(SAMPLE_CONFIG).port`; tests boot it in-process.
 */
export async function createSampleApp(
  env: SampleEnv = process.env,
  options: CreateSampleAppOptions = {},
): Promise<INestApplication> {
  const { config, generatedKeyFile } = await resolveSampleConfig(env);
  const app = await NestFactory.create(AppModule.forRoot(config), {
    // Throw instead of exiting the process, so a caller (or test) sees the error.
    abortOnError: false,
    ...(config.https
      ? {
          httpsOptions: {
            key: await readFile(config.https.keyFile),
            cert: await readFile(config.https.certFile),
          },
        }
      : {}),
    ...(options.logger !== undefined ? { logger: options.logger } : {}),
  });
  if (generatedKeyFile) {
    new Logger('Sample').log(
      `ATPROTO_ENC_KEY is not set: generated a new encryption key and saved it to ${generatedKeyFile} ` +
        '(mode 0600). It is reused on the next start; set ATPROTO_ENC_KEY to manage the key yourself.',
    );
  }
  app.use((_req: unknown, res: SampleResponse, next: () => void) => {
    // The pages use inline styles only: no scripts, no frames. (No form-action: the login
    // form's redirect to the user's authorization server must be allowed.)
    res.setHeader(
      'Content-Security-Policy',
      "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; base-uri 'none'; frame-ancestors 'none'",
    );
    res.setHeader('X-Content-Type-Options', 'nosniff');
    next();
  });
  return app;
}

/** The config the app was built with. */
export function sampleConfigOf(app: INestApplication): SampleConfig {
  return app.get<SampleConfig>(SAMPLE_CONFIG);
}
