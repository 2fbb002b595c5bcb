import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Environment variables, as `process.env` gives them. */
export type SampleEnv = Record<string, string | undefined>;

export interface SampleConfig {
  /** Port to listen on. */
  port: number;
  /** Interface to listen on: the loopback IP for a loopback `publicUrl`, else `HOST` or all. */
  host: string | undefined;
  /** Where browsers and AT Protocol servers reach the app. */
  publicUrl: string;
  /** SQLite file (created with its directory on first start); unused with `databaseUrl`. */
  databasePath: string;
  /**
   * A PostgreSQL URL (`postgres://user@host:5432/db`): store there instead of SQLite, so
   * that several instances share the sessions.
   */
  databaseUrl: string | undefined;
  /** Redis URL: the distributed session lock, for several instances. */
  redisUrl: string | undefined;
  /** `ATPROTO_BULLMQ=1` (with `REDIS_URL`): cleanup through a BullMQ job scheduler. */
  bullmq: boolean;
  /** `CLEANUP_INTERVAL_MS` / `CLEANUP_BATCH_SIZE`: cleanup schedule (module defaults if unset). */
  cleanup: { interval?: number; batchSize?: number };
  /** PEM files to serve https directly (both or neither). */
  https: { keyFile: string; certFile: string } | undefined;
  /** base64 of 32 bytes: encrypts tokens and DPoP keys at rest. */
  encryptionKey: string;
  /** Signs the access and refresh tokens of native and CLI apps (`sample/cli.mjs`). */
  nativeTokenSecret: string;
  /** Private ES256 JWK (JSON), needed with an https `publicUrl`. */
  privateJwk: string | undefined;
  handleResolver: string | undefined;
  plcDirectoryUrl: string | undefined;
  allowHttpServers: boolean;
  privateHosts: string[];
}

export interface ResolvedSampleConfig {
  config: SampleConfig;
  /** Set when no `ATPROTO_ENC_KEY` was given and a new key was written to this file. */
  generatedKeyFile: string | undefined;
  /** Set when the key was read from this file (generated on an earlier start). */
  keyFile: string | undefined;
}

/** The repository root: this file is `sample/src/config.ts` or `sample/dist/config.js`. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** `SAMPLE_DATA_DIR`, default `<repo>/.data` (gitignored). */
export function dataDirectory(env: SampleEnv): string {
  return resolve(env.SAMPLE_DATA_DIR || join(REPO_ROOT, '.data'));
}

/** `DATABASE_PATH`, default `<data dir>/sample.sqlite`; relative paths are from the cwd. */
export function databasePath(env: SampleEnv): string {
  return resolve(env.DATABASE_PATH || join(dataDirectory(env), 'sample.sqlite'));
}

function parsePort(value: string | undefined): number {
  if (value === undefined || value === '') return 3000;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`PORT must be a port number between 1 and 65535, got "${value}"`);
  }
  return port;
}

function isTrue(value: string | undefined): boolean {
  return value === '1' || value === 'true' || value === 'yes';
}

/**
 * Reads the sample's settings from `env`. Without `ATPROTO_ENC_KEY`, a key is generated on
 * the first start and kept in `<data dir>/sample-enc-key` (mode 0600) for the next ones.
 */
export async function resolveSampleConfig(env: SampleEnv): Promise<ResolvedSampleConfig> {
  const port = parsePort(env.PORT);
  const publicUrl = env.PUBLIC_URL || `http://127.0.0.1:${port}`;
  const hostname = URL.canParse(publicUrl) ? new URL(publicUrl).hostname : '';
  const loopbackHost =
    hostname === '127.0.0.1' ? '127.0.0.1' : hostname === '[::1]' ? '::1' : undefined;
  const dbPath = databasePath(env);
  const databaseUrl = env.DATABASE_URL || undefined;
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new Error('DATABASE_URL must be a postgres:// URL (leave it unset for SQLite)');
  }
  if (!databaseUrl) await mkdir(dirname(dbPath), { recursive: true, mode: 0o700 });
  if (!env.HTTPS_KEY_FILE !== !env.HTTPS_CERT_FILE) {
    throw new Error('HTTPS_KEY_FILE and HTTPS_CERT_FILE go together: set both or neither');
  }

  let encryptionKey = env.ATPROTO_ENC_KEY?.trim();
  let generatedKeyFile: string | undefined;
  let keyFile: string | undefined;
  if (!encryptionKey) {
    keyFile = join(dataDirectory(env), 'sample-enc-key');
    const loaded = await loadOrCreateKey(keyFile);
    encryptionKey = loaded.key;
    if (loaded.created) generatedKeyFile = keyFile;
  }
  // The token secret of native and CLI apps: like the encryption key, generated once and
  // kept next to it unless given (never the encryption key itself).
  const nativeTokenSecret =
    env.ATPROTO_NATIVE_TOKEN_SECRET?.trim() ||
    (await loadOrCreateKey(join(dataDirectory(env), 'sample-native-token-secret'))).key;

  return {
    config: {
      port,
      host: env.HOST || loopbackHost,
      publicUrl,
      databasePath: dbPath,
      databaseUrl,
      redisUrl: env.REDIS_URL || undefined,
      bullmq: Boolean(env.REDIS_URL) && isTrue(env.ATPROTO_BULLMQ),
      cleanup: {
        ...(env.CLEANUP_INTERVAL_MS ? { interval: Number(env.CLEANUP_INTERVAL_MS) } : {}),
        ...(env.CLEANUP_BATCH_SIZE ? { batchSize: Number(env.CLEANUP_BATCH_SIZE) } : {}),
      },
      https:
        env.HTTPS_KEY_FILE && env.HTTPS_CERT_FILE
          ? { keyFile: resolve(env.HTTPS_KEY_FILE), certFile: resolve(env.HTTPS_CERT_FILE) }
          : undefined,
      encryptionKey,
      nativeTokenSecret,
      privateJwk: env.ATPROTO_PRIVATE_JWK || undefined,
      handleResolver: env.ATPROTO_HANDLE_RESOLVER || undefined,
      plcDirectoryUrl: env.ATPROTO_PLC_URL || undefined,
      allowHttpServers: isTrue(env.ATPROTO_ALLOW_HTTP),
      privateHosts: (env.ATPROTO_PRIVATE_HOSTS ?? '')
        .split(',')
        .map((h) => h.trim())
        .filter(Boolean),
    },
    generatedKeyFile,
    keyFile,
  };
}

async function loadOrCreateKey(file: string): Promise<{ key: string; created: boolean }> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const key = randomBytes(32).toString('base64');
  try {
    // `wx`: never overwrite a key another process wrote in the meantime.
    await writeFile(file, `${key}\n`, { flag: 'wx', mode: 0o600 });
    return { key, created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  if (((await stat(file)).mode & 0o077) !== 0) await chmod(file, 0o600);
  return { key: (await readFile(file, 'utf8')).trim(), created: false };
}
