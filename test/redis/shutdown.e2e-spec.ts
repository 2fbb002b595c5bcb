/**
 * Closing the app while Redis is down, comes back, or stalls. Kubernetes gives a pod a grace
 * period after SIGTERM, then kills it: app.close() must resolve whatever Redis does (so that
 * the rest of the close, other modules' hooks and the HTTP server, still happens), and
 * leave nothing of the module running, so that the process exits by itself. The app
 * (Redis lock, stores and caches, invalidation channel, BullMQ cleanup) runs in a process
 * of its own (support/shutdown-probe.ts) on a redis-server of the test's own. Liveness
 * only: the Jest timeout is the bound, and no duration is asserted.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { OwnRedis } from '../support/redis-server.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SUPPORT = fileURLToPath(new URL('./support/', import.meta.url));
const HOOKS = fileURLToPath(new URL('../invalidation/support/swc-hooks.mjs', import.meta.url));

/** The probe process, its output so far, and a way to wait for a line or for its exit. */
class Probe {
  out = '';
  done = false;
  readonly exited: Promise<number | null>;
  readonly #child: ChildProcessWithoutNullStreams;
  #waiters: Array<() => void> = [];

  constructor(redisUrl: string, env: Record<string, string> = {}) {
    this.#child = spawn(process.execPath, ['--import', HOOKS, `${SUPPORT}shutdown-probe.ts`], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', NODE_NO_WARNINGS: '1', REDIS_URL: redisUrl, ...env },
    });
    const take = (c: Buffer) => {
      this.out += c.toString();
      for (const wake of this.#waiters) wake();
    };
    this.#child.stdout.on('data', take);
    this.#child.stderr.on('data', take);
    this.exited = new Promise((resolve) =>
      this.#child.once('exit', (code) => {
        this.done = true;
        resolve(code);
      }),
    );
  }

  /** Resolves once the probe printed a line starting with `prefix`. */
  async line(prefix: string): Promise<string> {
    for (;;) {
      const found = this.out.split('\n').find((l) => l.startsWith(prefix));
      if (found !== undefined) return found;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
      this.#waiters = [];
    }
  }

  send(order: string): void {
    this.#child.stdin.write(`${order}\n`);
  }

  kill(): void {
    if (this.#child.exitCode === null) this.#child.kill('SIGKILL');
  }
}

describe('app.close() with Redis in trouble', () => {
  let redis: OwnRedis;
  let probe: Probe | undefined;

  beforeEach(async () => {
    redis = await OwnRedis.start();
  });

  afterEach(async () => {
    // Still running: the test failed on it; what it printed says where it stopped.
    if (probe && !probe.done) console.log(`probe output:\n${probe.out}`);
    probe?.kill();
    probe = undefined;
    await redis.stop();
  });

  /** Boots the probe and checks that its Redis connections work. */
  async function boot(env: Record<string, string> = {}): Promise<Probe> {
    probe = new Probe(redis.url, env);
    const ready = await Promise.race([probe.line('READY '), probe.exited.then(() => '')]);
    expect(ready).toBe('READY {"channel":"proven","cursor":"ok","trusted":true}');
    return probe;
  }

  /** Boots the probe, stops its Redis, and waits until the probe's connections know it. */
  async function bootThenStopRedis(env: Record<string, string> = {}): Promise<Probe> {
    const p = await boot(env);
    await redis.stop();
    await p.line('REDIS LOST');
    return p;
  }

  it('resolves with Redis down, and the process then exits by itself', async () => {
    const p = await bootThenStopRedis();
    p.send('close');
    await p.line('CLOSED');
    expect(await p.exited).toBe(0);
  }, 15_000);

  it('resolves when Redis comes back during the close, and the process then exits', async () => {
    // The close is held at the app's first hook until Redis answers again: the module's
    // hooks then start with its connections still waiting to reconnect.
    const p = await bootThenStopRedis({ HOLD_CLOSE: '1' });
    p.send('close');
    await p.line('CLOSING');
    await redis.restart();
    p.send('go');
    await p.line('CLOSED');
    expect(await p.exited).toBe(0);
  }, 15_000);

  it('resolves when Redis is connected but answers nothing, and the process then exits', async () => {
    const p = await boot();
    // A stall: Redis keeps every connection open and answers no command (QUIT included)
    // for longer than the test.
    const side = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    try {
      await side.call('CLIENT', 'PAUSE', '600000', 'ALL');
    } finally {
      side.disconnect();
    }
    p.send('close');
    await p.line('CLOSED');
    expect(await p.exited).toBe(0);
  }, 15_000);
});
