/**
 * The processes of the HTTP benchmarks (bench/http, bench/cleanup): a guard server and a load
 * generator, each a Node process of its own on a core of its own, started, read and stopped
 * alike. One copy, so that every benchmark pins, spawns and cleans up the same way.
 * @internal
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root: the working directory of every child. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The loader hooks every child runs TypeScript with (`--import`). */
export const HOOKS = join(ROOT, 'bench', 'support', 'swc-hooks.mjs');

/**
 * Server and load generator on different cores, so that they do not compete for one. On a
 * machine with one core (or without `taskset`) nothing is pinned: both share what there is,
 * every variant pays the same load generator, and only the ratios of one run compare.
 */
function pinning(): { server: string[]; load: string[]; note: string } {
  let taskset = false;
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    taskset = true;
  } catch {
    // not installed
  }
  if (availableParallelism() >= 2 && taskset) {
    return {
      server: ['taskset', '-c', '1'],
      load: ['taskset', '-c', '0'],
      note: 'server pinned to core 1 (taskset -c 1), load generator to core 0 (taskset -c 0)',
    };
  }
  return {
    server: [],
    load: [],
    note:
      availableParallelism() < 2
        ? 'one core: server and load generator share it (not pinned); compare ratios only'
        : 'taskset not found: processes not pinned; compare ratios only',
  };
}

/** The command prefixes that pin the server and the load generator, and a line saying so. */
export const PIN = pinning();

const children = new Set<ChildProcess>();

/**
 * Starts `node <nodeArgs>` behind the `pin` prefix, in {@link ROOT} with `env` added. With
 * `ipc` it shares stdout and stderr and has an IPC channel (a server); without, its stdout is
 * piped to the caller (a load generator). Tracked until it exits, for {@link killChildren}.
 */
export function spawnNode(
  pin: string[],
  nodeArgs: string[],
  env: Record<string, string>,
  ipc: boolean,
): ChildProcess {
  const command = [...pin, process.execPath, ...nodeArgs];
  const child = spawn(command[0]!, command.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ipc ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Kills every child still running (a failed or hung run): none outlives the benchmark. */
export function killChildren(): void {
  for (const c of children) c.kill('SIGKILL');
}

/**
 * Asks a server started by {@link spawnNode} to exit (`{ type: 'exit' }` over IPC) and waits
 * for it; kills it if it has not exited 15 s later.
 */
export async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.send({ type: 'exit' });
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Runs the load generator `script` (a path under {@link ROOT}) on the load generator's core
 * with `request` as its argument (JSON), and resolves the one line of JSON it prints.
 */
export async function runLoadProcess<Result>(script: string, request: unknown): Promise<Result> {
  const child = spawnNode(
    PIN.load,
    ['--import', HOOKS, join(ROOT, script), JSON.stringify(request)],
    {},
    false,
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`the load generator exited with ${code}`);
  return JSON.parse(out) as Result;
}
