/**
 * The invalidation machinery in a real module, in a process of its own: proven at boot,
 * and it never keeps the process alive. Without Redis its only timer (the cursor) is
 * unref'd; with Redis, closing the app closes its subscriber and stops its timers.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { OwnRedis } from '../support/redis-server.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SUPPORT = fileURLToPath(new URL('./support/', import.meta.url));

/** Runs the probe; resolves its output and exit code, or rejects if it has not exited by then. */
function probe(
  env: Record<string, string>,
  ms = 45_000,
): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', `${SUPPORT}swc-hooks.mjs`, `${SUPPORT}lifecycle-probe.ts`],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', NODE_NO_WARNINGS: '1', ...env } },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the process did not exit by itself within ${ms} ms:\n${out}`));
    }, ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ out, code });
    });
  });
}

function stateOf(out: string): unknown {
  const line = out.split('\n').find((l) => l.startsWith('STATE '));
  return line ? JSON.parse(line.slice('STATE '.length)) : undefined;
}

it('without Redis: the cursor alone is proven, and the process exits without being closed', async () => {
  const { out, code } = await probe({});
  expect(code).toBe(0);
  expect(stateOf(out)).toEqual({ channel: 'off', cursor: 'ok', trusted: true });
}, 60_000);

it('with Redis: channel and cursor proven; once the app is closed the process exits', async () => {
  const redis = await OwnRedis.start();
  try {
    const { out, code } = await probe({ REDIS_URL: redis.url, CLOSE: '1' });
    expect(code).toBe(0);
    expect(stateOf(out)).toEqual({ channel: 'proven', cursor: 'ok', trusted: true });
  } finally {
    await redis.stop();
  }
}, 60_000);
