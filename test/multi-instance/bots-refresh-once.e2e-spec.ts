/**
 * One bot, 4 app instances: each a separate OS process (test/multi-instance/support/
 * bot-worker.mjs, the library compiled with tsc) sharing one PostgreSQL database and one
 * Redis; the local PDS in this process, which counts the session calls it receives. The
 * bot logs in once; its stored access JWT is then made to look expired and every instance
 * calls the PDS at once through freshly restored sessions: exactly one refreshSession
 * reaches the PDS, and every call succeeds. The PDS holds each refreshSession for a second
 * (in this process, in front of its listener), so that concurrent refreshes would always
 * overlap there. The control, the same 4 instances without Redis (a per-process lock),
 * refreshes more than once.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { RequestListener, Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AtpAgent } from '@atproto/api';
import { DataSource } from 'typeorm';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { createTestDatabase } from '../support/databases.js';
import { randomKey } from '../support/key-ring.js';
import { OwnRedis } from '../support/redis-server.js';
import { startTestPds, type TestAccount, type TestPds } from '../e2e/support/pds.js';
import { buildSample, ROOT } from './support/cluster.js';

const INSTANCES = 4;
const CALLS_PER_INSTANCE = 25;
const REFRESH_DELAY_MS = 1000;

let dir: string;
let pds: TestPds;
let redis: OwnRedis;
let ds: DataSource;
let dropDb: () => Promise<void>;
let account: TestAccount;
let appPassword: string;
let workers: Worker[] = [];
let config: Record<string, unknown>;
let dist: string;
/** Session calls that reached the PDS: `<nsid> <status>`. */
const calls: string[] = [];

interface Reply {
  id: number;
  ok: boolean;
  [key: string]: unknown;
}

class Worker {
  #next = 0;
  readonly #waiting = new Map<number, (reply: Reply) => void>();
  private constructor(readonly child: ChildProcess) {
    child.on('message', (message: Reply) => this.#waiting.get(message.id)?.(message));
  }

  static async start(env: Record<string, string>): Promise<Worker> {
    const child = fork(join(ROOT, 'test/multi-instance/support/bot-worker.mjs'), [], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: [],
    });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`a bot worker exited at boot (${code})`)));
    });
    return new Worker(child);
  }

  send(message: Record<string, unknown>): Promise<Reply> {
    const id = ++this.#next;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      this.child.send({ ...message, id });
    });
  }
}

function countSessionCalls(server: Server): void {
  const listeners = server.listeners('request') as RequestListener[];
  server.removeAllListeners('request');
  server.on('request', (req, res) => {
    const path = new URL(req.url ?? '/', 'http://pds').pathname;
    if (/^\/xrpc\/com\.atproto\.server\.(create|refresh|delete)Session$/.test(path)) {
      res.once('finish', () => calls.push(`${path.slice(6)} ${res.statusCode}`));
    }
    const dispatch = () => {
      for (const listener of listeners) listener.call(server, req, res);
    };
    if (path.endsWith('.refreshSession')) setTimeout(dispatch, REFRESH_DELAY_MS);
    else dispatch();
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'atp-mi-bots-'));
  // One after the other, so that afterAll stops whatever started if a later step fails.
  const main = await buildSample(dir);
  pds = await startTestPds();
  redis = await OwnRedis.start();
  countSessionCalls(pds.pds.server as Server);
  const db = await createTestDatabase('postgres', 'mi_bots');
  dropDb = db.drop;
  ds = new DataSource({
    ...db.options,
    entities: [...atProtoEntities],
    migrations: atProtoMigrations(),
  });
  await ds.initialize();
  await ds.runMigrations();

  account = await pds.createAccount('robotb.test');
  const owner = new AtpAgent({ service: pds.url });
  await owner.login({ identifier: account.handle, password: account.password });
  appPassword = (await owner.com.atproto.server.createAppPassword({ name: 'mi' })).data.password;

  config = {
    database: db.options,
    encryptionKey: randomKey(),
    pdsUrl: pds.url,
    plcUrl: pds.plcUrl,
  };
  dist = join(main, '..', '..', '..', 'dist', 'index.js');
}, 240_000);

async function startWorkers(redisUrl: string | undefined): Promise<void> {
  for (const w of workers) w.child.kill('SIGKILL');
  const env = {
    BOT_DIST: dist,
    BOT_CONFIG: JSON.stringify({ ...config, ...(redisUrl ? { redis: redisUrl } : {}) }),
    NO_COLOR: '1',
  };
  workers = [];
  for (let i = 0; i < INSTANCES; i++) workers.push(await Worker.start(env));
}

/** Makes the stored access JWT look expired, then calls from every instance at once. */
async function burstOnExpiredAccess(): Promise<Reply[]> {
  calls.length = 0;
  await ds.query('UPDATE "atproto_bot_session" SET "access_expires_at" = $1 WHERE "did" = $2', [
    Date.now() - 1000,
    account.did,
  ]);
  return Promise.all(
    workers.map((w) => w.send({ op: 'calls', did: account.did, n: CALLS_PER_INSTANCE })),
  );
}

afterAll(async () => {
  for (const w of workers) w.child.kill('SIGKILL');
  await ds?.destroy();
  await dropDb?.();
  await redis?.stop();
  await pds?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it(`4 instances with Redis, ${CALLS_PER_INSTANCE} calls each on an expired access JWT: exactly one refreshSession reaches the PDS`, async () => {
  await startWorkers(redis.url);
  calls.length = 0; // the account owner's own login above
  const login = await workers[0]!.send({
    op: 'login',
    identifier: account.handle,
    password: appPassword,
  });
  expect(login).toMatchObject({ ok: true, did: account.did });
  // Another instance booting logs in with the stored session: no second createSession.
  expect(
    await workers[1]!.send({ op: 'login', identifier: account.handle, password: appPassword }),
  ).toMatchObject({ ok: true });
  expect(calls).toEqual(['com.atproto.server.createSession 200']);

  const replies = await burstOnExpiredAccess();

  for (const reply of replies) {
    expect(reply).toEqual({
      id: expect.any(Number),
      ok: true,
      statuses: Array(CALLS_PER_INSTANCE).fill(200),
    });
  }
  expect(calls).toEqual(['com.atproto.server.refreshSession 200']);
  const [row] = (await ds.query('SELECT * FROM "atproto_bot_session"')) as Array<
    Record<string, unknown>
  >;
  expect(Number(row!.access_expires_at)).toBeGreaterThan(Date.now() + 60_000);
});

it('control: the same 4 instances without Redis (per-process lock) refresh more than once', async () => {
  await startWorkers(undefined);
  await burstOnExpiredAccess();
  const refreshes = calls.filter((c) => c.includes('refreshSession'));
  console.log(`[multi-instance] bots control: PDS saw ${JSON.stringify(calls)}`);
  expect(refreshes.length).toBeGreaterThan(1);
});
