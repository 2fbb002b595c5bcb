/**
 * App instances as separate processes (instance-app.ts, run from source through
 * swc-hooks.mjs), one PostgreSQL database of the test's own, and the HTTP calls the
 * cross-instance tests make.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { createTestDatabase } from '../../support/databases.js';
import { freePort } from '../../support/redis-server.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SUPPORT = fileURLToPath(new URL('./', import.meta.url));
const EXIT_WITH_PARENT = join(ROOT, 'test', 'multi-instance', 'support', 'exit-with-parent.mjs');

/** The database the instances share. */
export interface SharedDatabase {
  url: string;
  dataSource: DataSource;
  drop(): Promise<void>;
}

export async function sharedDatabase(label: string): Promise<SharedDatabase> {
  const db = await createTestDatabase('postgres', label);
  const dataSource = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
  } as never);
  await dataSource.initialize();
  await dataSource.runMigrations();
  return {
    url: `postgres://postgres@127.0.0.1:5432/${db.name}`,
    dataSource,
    drop: async () => {
      await dataSource.destroy();
      await db.drop();
    },
  };
}

/** One instance process. */
export class Instance {
  #child: ChildProcess | undefined;
  private constructor(
    readonly name: string,
    readonly port: number,
    private readonly env: Record<string, string>,
    private readonly log: WriteStream,
  ) {}

  static async start(name: string, env: Record<string, string>, log: WriteStream) {
    const instance = new Instance(name, await freePort(), env, log);
    await instance.#start();
    return instance;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async #start(): Promise<void> {
    this.log.write(`\n--- start ${this.name} (port ${this.port}) ---\n`);
    const child = spawn(
      process.execPath,
      [
        '--import', join(SUPPORT, 'swc-hooks.mjs'),
        '--import', EXIT_WITH_PARENT,
        join(SUPPORT, 'instance-app.ts'),
      ], // prettier-ignore
      {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '/tmp',
          NODE_NO_WARNINGS: '1',
          NODE_ENV: 'test',
          PORT: String(this.port),
          ...this.env,
        },
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    this.#child = child;
    const prefix = (chunk: Buffer) => `[${this.name}] ${chunk.toString('utf8')}`;
    let ready!: () => void;
    const readyLine = new Promise<void>((resolve) => (ready = resolve));
    child.stdout?.on('data', (chunk: Buffer) => {
      this.log.write(prefix(chunk));
      if (chunk.toString('utf8').includes('INSTANCE-READY')) ready();
    });
    child.stderr?.on('data', (chunk: Buffer) => this.log.write(prefix(chunk)));
    child.stdin?.on('error', () => undefined);
    const failed = new Promise<never>((_, reject) =>
      child.once('exit', (code) => reject(new Error(`${this.name} exited at boot (${code})`))),
    );
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} did not start`)), 90_000);
    });
    try {
      await Promise.race([readyLine, failed, timeout]);
    } finally {
      clearTimeout(timer);
    }
    failed.catch(() => undefined);
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    child.stdin?.destroy();
    child.stdout?.destroy();
    child.stderr?.destroy();
  }

  async call(
    method: 'GET' | 'POST',
    path: string,
    options: { body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: {
        ...(options.body ? { 'content-type': 'application/json' } : {}),
        ...options.headers,
      },
      body: options.body ? JSON.stringify(options.body) : undefined,
    });
    const text = await res.text();
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // not JSON
    }
    return { status: res.status, body };
  }

  /** `GET /me` with a session cookie: 200 or 401. */
  async me(token: string): Promise<number> {
    return (await this.call('GET', '/me', { headers: { cookie: `atproto_session=${token}` } }))
      .status;
  }

  /** `GET /me` with an API key. */
  async meWithKey(key: string): Promise<number> {
    return (await this.call('GET', '/me', { headers: { authorization: `Bearer ${key}` } })).status;
  }

  async session(did: string): Promise<{ token: string; id: string }> {
    const res = await this.call('POST', '/control/session', { body: { did } });
    if (res.status !== 201) throw new Error(`create session: ${res.status}`);
    return res.body as { token: string; id: string };
  }

  async revoke(id: string): Promise<void> {
    const res = await this.call('POST', '/control/revoke', { body: { id } });
    if (res.body.revoked !== true)
      throw new Error(`revoke: ${res.status} ${JSON.stringify(res.body)}`);
  }

  async revokeAll(did: string): Promise<number> {
    return (await this.call('POST', '/control/revoke-all', { body: { did } })).body
      .revoked as number;
  }

  async key(did: string): Promise<{ key: string; id: string }> {
    const res = await this.call('POST', '/control/key', { body: { did } });
    if (res.status !== 201) throw new Error(`create key: ${res.status}`);
    return res.body as { key: string; id: string };
  }

  async revokeKey(id: string, did: string): Promise<void> {
    const res = await this.call('POST', '/control/revoke-key', { body: { id, did } });
    if (res.body.revoked !== true) throw new Error(`revoke key: ${res.status}`);
  }

  /** The invalidation state (`null` in a version without it). */
  async state(): Promise<{ channel: string; cursor: string; trusted: boolean } | null> {
    return (await this.call('GET', '/control/state')).body.state as never;
  }
}

/** A directory for the instances' logs; kept when MI_KEEP_LOGS is set. */
export async function logDir(): Promise<{
  log: (name: string) => WriteStream;
  dir: string;
  remove(): Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'invalidation-'));
  return {
    dir,
    log: (name) => createWriteStream(join(dir, `${name}.log`), { flags: 'a' }),
    remove: async () => {
      if (process.env.MI_KEEP_LOGS) console.log(`[invalidation] logs kept in ${dir}`);
      else await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A fresh encryption key for the instances (they must share it). */
export function encryptionKey(): string {
  return randomBytes(32).toString('base64');
}

/**
 * Polls `probe` (every 10 ms) until it holds; resolves how long that took after `from`
 * (epoch ms), or rejects after `ms`.
 */
export async function until(
  what: string,
  probe: () => Promise<boolean>,
  ms: number,
  from = Date.now(),
): Promise<number> {
  for (;;) {
    if (await probe()) return Date.now() - from;
    if (Date.now() - from > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}
