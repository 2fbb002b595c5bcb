/**
 * Several instances of the sample app (sample/), each a separate OS process serving https
 * with a throwaway CA, sharing one PostgreSQL database (of the test's own), one encryption
 * key, one signing key and, optionally, a Redis; plus the PDS in a process of its own
 * (pds-process.ts) that fetches the client metadata from the instances over real https.
 *
 * The sample and the library are compiled with tsc into a private directory once per test
 * file (the same build as `npm run build` + `tsc -p sample/tsconfig.json`, but never racing
 * anyone else's dist/).
 * @internal
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { JoseKey } from '@atproto/oauth-client-node';
import { Agent, request } from 'undici';
import { DataSource } from 'typeorm';
import {
  atProtoEntities,
  atProtoMigrations,
  installKeyRing,
  KeyRing,
  TypeOrmSessionStore,
} from 'nestjs-atproto-auth';
import { createTestDatabase } from '../../support/databases.js';
import { freePort } from '../../support/redis-server.js';
import { CookieJar } from '../../e2e/support/cookie-jar.js';
import {
  refreshTokenHash,
  signInAndConsent,
  type OAuthEndpointRequest,
  type TestAccount,
} from '../../e2e/support/pds.js';

const run = promisify(execFile);
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SUPPORT = fileURLToPath(new URL('./', import.meta.url));
const APP_HOST = 'app.e2e.internal';
/** The key id the sample gives its encryption key (sample/src/app.module.ts). */
const SAMPLE_KEY_ID = 'sample-1';

// --- build ------------------------------------------------------------------------------

/**
 * Compiles the library and the sample with tsc into a new temp directory laid out like the
 * repository (package.json named `nestjs-atproto-auth`, so the sample's import of the
 * package resolves to this build's dist/). Fails on any compile error.
 */
export async function buildSample(dir: string): Promise<string> {
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  await writeFile(
    join(dir, 'package.json'),
    JSON.stringify({
      name: 'nestjs-atproto-auth',
      type: 'module',
      exports: { '.': { types: './dist/index.d.ts', default: './dist/index.js' } },
    }),
  );
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  const compile = async (args: string[]): Promise<void> => {
    try {
      await run(process.execPath, [tsc, ...args], { cwd: ROOT, maxBuffer: 16 << 20 });
    } catch (error) {
      const { stdout, stderr } = error as { stdout?: string; stderr?: string };
      throw new Error(`tsc ${args.join(' ')} failed:\n${stdout ?? ''}${stderr ?? ''}`, {
        cause: error,
      });
    }
  };
  await compile([
    '-p',
    join(ROOT, 'lib', 'tsconfig.build.json'),
    '--outDir',
    join(dir, 'dist'),
    '--sourceMap',
    'false',
    '--inlineSources',
    'false',
  ]);
  const sampleConfig = join(dir, 'tsconfig.sample.json');
  await writeFile(
    sampleConfig,
    JSON.stringify({
      extends: join(ROOT, 'sample', 'tsconfig.json'),
      compilerOptions: {
        rootDir: join(ROOT, 'sample', 'src'),
        outDir: join(dir, 'sample', 'dist'),
        sourceMap: false,
        paths: { 'nestjs-atproto-auth': [join(dir, 'dist', 'index.d.ts')] },
      },
      include: [join(ROOT, 'sample', 'src')],
    }),
  );
  await compile(['-p', sampleConfig]);
  return join(dir, 'sample', 'dist', 'main.js');
}

// --- certificates ---------------------------------------------------------------------

export interface TestCerts {
  caFile: string;
  keyFile: string;
  certFile: string;
  ca: string;
}

/** A throwaway CA and a leaf for `app.e2e.internal`, `*.e2e.internal` and 127.0.0.1. */
export async function makeCerts(dir: string): Promise<TestCerts> {
  const f = (name: string) => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2',
    '-subj', '/CN=nestjs-atproto-auth e2e test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]); // prettier-ignore
  await run('openssl', [
    'req', ...ec, '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', `/CN=${APP_HOST}`,
  ]); // prettier-ignore
  await writeFile(
    f('leaf.ext'),
    [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=DNS:${APP_HOST},DNS:*.e2e.internal,IP:127.0.0.1`,
    ].join('\n'),
  );
  await run('openssl', [
    'x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'),
    '-CAcreateserial', '-out', f('leaf.crt'), '-days', '2', '-extfile', f('leaf.ext'),
  ]); // prettier-ignore
  return {
    caFile: f('ca.crt'),
    keyFile: f('leaf.key'),
    certFile: f('leaf.crt'),
    ca: await readFile(f('ca.crt'), 'utf8'),
  };
}

// --- processes ------------------------------------------------------------------------

/** A child process whose output goes to a log file, ended when the test process ends. */
function spawnLogged(
  args: string[],
  env: Record<string, string>,
  log: WriteStream,
  onLine?: (line: string) => void,
): ChildProcess {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let pending = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    log.write(chunk);
    if (!onLine) return;
    pending += chunk.toString('utf8');
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      onLine(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => log.write(chunk));
  child.stdin?.on('error', () => undefined);
  return child;
}

async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((resolve) => child.once('exit', resolve));
}

/** The PDS's answer to the control API's `GET /grants`. */
export interface PdsGrant {
  id: number;
  currentRefreshToken: string | null;
  usedRefreshTokens: string[];
  updatedAt: string;
}

/** The PDS process (pds-process.ts) and its control API. */
export class PdsProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    readonly plcUrl: string,
    readonly control: string,
    readonly account: TestAccount,
  ) {}

  static async start(certs: TestCerts, log: WriteStream): Promise<PdsProcess> {
    let ready!: (line: string) => void;
    const readyLine = new Promise<string>((resolve) => (ready = resolve));
    const child = spawnLogged(
      [
        '--import', join(SUPPORT, 'e2e-dns.mjs'),
        '--import', join(ROOT, 'test', 'support', 'ts-hooks.mjs'),
        '--import', join(SUPPORT, 'exit-with-parent.mjs'),
        join(SUPPORT, 'pds-process.ts'),
      ], // prettier-ignore
      // Read by Node at startup only: the PDS trusts the instances' certificate.
      { NODE_EXTRA_CA_CERTS: certs.caFile, NODE_NO_WARNINGS: '1' },
      log,
      (line) => {
        if (line.startsWith('MI-PDS-READY ')) ready(line.slice('MI-PDS-READY '.length));
      },
    );
    const failed = new Promise<never>((_, reject) =>
      child.once('exit', (code) => reject(new Error(`the PDS process exited (${code})`))),
    );
    const info = JSON.parse(await Promise.race([readyLine, failed])) as {
      url: string;
      plcUrl: string;
      control: string;
      account: TestAccount;
    };
    return new PdsProcess(child, info.url, info.plcUrl, info.control, info.account);
  }

  private async call<T>(method: 'GET' | 'POST', path: string): Promise<T> {
    const res = await request(`${this.control}${path}`, { method });
    const body = (await res.body.json()) as T;
    if (res.statusCode !== 200) throw new Error(`PDS control ${path}: ${JSON.stringify(body)}`);
    return body;
  }

  /** Every `POST /oauth/token` that reached the PDS since the last reset. */
  async tokenRequests(): Promise<OAuthEndpointRequest[]> {
    return (await this.call<{ token: OAuthEndpointRequest[] }>('GET', '/requests')).token;
  }
  async revokeRequests(): Promise<OAuthEndpointRequest[]> {
    return (await this.call<{ revoke: OAuthEndpointRequest[] }>('GET', '/requests')).revoke;
  }
  async setTokenDelay(ms: number): Promise<void> {
    await this.call('POST', `/token-delay?ms=${ms}`);
  }
  async setTokenResponseDelay(ms: number): Promise<void> {
    await this.call('POST', `/token-response-delay?ms=${ms}`);
  }
  async reset(): Promise<void> {
    await this.call('POST', '/reset');
  }
  async grants(did: string): Promise<PdsGrant[]> {
    return this.call('GET', `/grants?did=${encodeURIComponent(did)}`);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited(this.child);
    clearTimeout(timer);
  }
}

/** One sample app process. */
export class AppInstance {
  child: ChildProcess | undefined;

  constructor(
    readonly index: number,
    readonly port: number,
    private readonly main: string,
    private readonly env: Record<string, string>,
    private readonly log: WriteStream,
  ) {}

  /** `https://127.0.0.1:PORT`, where the test talks to this instance directly. */
  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(http: Agent): Promise<void> {
    this.log.write(`\n--- start instance ${this.index} (port ${this.port}) ---\n`);
    const child = spawnLogged(
      ['--import', join(SUPPORT, 'exit-with-parent.mjs'), this.main],
      { ...this.env, PORT: String(this.port), HOST: '127.0.0.1', NODE_NO_WARNINGS: '1' },
      this.log,
    );
    this.child = child;
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`instance ${this.index} exited at boot`);
      try {
        const res = await request(`${this.url}/health`, { dispatcher: http });
        await res.body.dump();
        if (res.statusCode === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`instance ${this.index} did not start`);
      await sleep(100);
    }
  }

  /** Sends `signal` and waits for the process to be gone. */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited(child);
    clearTimeout(timer);
  }
}

// --- the whole setup --------------------------------------------------------------------

export interface ApiResult {
  status: number;
  body: unknown;
  instance: number;
}

export interface ClusterOptions {
  /** Label of the PostgreSQL database (letters, digits). */
  label: string;
  instances: number;
}

/**
 * The PDS process, the certificates, the build, the database and the shared secrets. App
 * instances are started per configuration with {@link startInstances}.
 */
export class Cluster {
  readonly http: Agent;
  readonly sessionStore: TypeOrmSessionStore;
  instances: AppInstance[] = [];
  readonly #ports: number[];

  private constructor(
    readonly dir: string,
    readonly main: string,
    readonly certs: TestCerts,
    readonly pds: PdsProcess,
    readonly dataSource: DataSource,
    readonly databaseUrl: string,
    private readonly dropDatabase: () => Promise<void>,
    readonly secrets: { encryptionKey: string; privateJwk: string; nativeTokenSecret: string },
    ports: number[],
  ) {
    this.http = new Agent({ connect: { ca: certs.ca }, connections: 256 });
    this.sessionStore = new TypeOrmSessionStore(dataSource, { ttlMs: 90 * 24 * 3600_000 });
    this.#ports = ports;
  }

  get account(): TestAccount {
    return this.pds.account;
  }

  /** The one https client id / public URL of every instance: instance 0 serves it. */
  get publicUrl(): string {
    return `https://${APP_HOST}:${this.#ports[0]}`;
  }

  logFile(name: string): string {
    return join(this.dir, `${name}.log`);
  }

  static async start(options: ClusterOptions): Promise<Cluster> {
    const dir = await mkdtemp(join(tmpdir(), 'multi-instance-'));
    const log = (name: string) => createWriteStream(join(dir, `${name}.log`), { flags: 'a' });
    const [main, certs, db, jwk] = await Promise.all([
      mkdtemp(join(dir, 'build-')).then(buildSample),
      makeCerts(dir),
      createTestDatabase('postgres', options.label),
      JoseKey.generate(['ES256'], 'mi-1'),
    ]);
    const pds = await PdsProcess.start(certs, log('pds'));
    const encryptionKey = randomBytes(32).toString('base64');
    // The sample's key ring, installed here too: the test reads and rewrites stored sessions.
    installKeyRing(
      new KeyRing({ activeKeyId: SAMPLE_KEY_ID, keys: { [SAMPLE_KEY_ID]: encryptionKey } }),
    );
    // Migrate once up front, so that instances can boot side by side.
    const dataSource = new DataSource({
      ...db.options,
      entities: [...atProtoEntities],
      migrations: atProtoMigrations(),
    } as never);
    await dataSource.initialize();
    await dataSource.runMigrations();
    const ports = await Promise.all(Array.from({ length: options.instances }, () => freePort()));
    return new Cluster(
      dir,
      main,
      certs,
      pds,
      dataSource,
      `postgres://postgres@127.0.0.1:5432/${db.name}`,
      db.drop,
      {
        encryptionKey,
        privateJwk: JSON.stringify(jwk.privateJwk),
        nativeTokenSecret: randomBytes(32).toString('base64'),
      },
      ports,
    );
  }

  /** The environment every instance gets (plus `extra`). */
  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      PUBLIC_URL: this.publicUrl,
      HTTPS_KEY_FILE: this.certs.keyFile,
      HTTPS_CERT_FILE: this.certs.certFile,
      DATABASE_URL: this.databaseUrl,
      ATPROTO_ENC_KEY: this.secrets.encryptionKey,
      ATPROTO_PRIVATE_JWK: this.secrets.privateJwk,
      ATPROTO_NATIVE_TOKEN_SECRET: this.secrets.nativeTokenSecret,
      ATPROTO_HANDLE_RESOLVER: this.pds.url,
      ATPROTO_PLC_URL: this.pds.plcUrl,
      ATPROTO_ALLOW_HTTP: '1',
      ATPROTO_PRIVATE_HOSTS: `${new URL(this.pds.url).host},${new URL(this.pds.plcUrl).host}`,
      SAMPLE_DATA_DIR: this.dir,
      ...extra,
    };
  }

  /** Stops the running instances and starts a new set with `env` (see {@link env}). */
  async startInstances(extraEnv: Record<string, string> = {}): Promise<AppInstance[]> {
    await this.stopInstances();
    const log = createWriteStream(this.logFile('instances'), { flags: 'a' });
    this.instances = this.#ports.map(
      (port, i) =>
        new AppInstance(i, port, this.main, { ...this.env(extraEnv), INSTANCE: String(i) }, log),
    );
    await Promise.all(this.instances.map((instance) => instance.start(this.http)));
    return this.instances;
  }

  async stopInstances(): Promise<void> {
    await Promise.all(this.instances.map((instance) => instance.kill('SIGTERM')));
  }

  /** Logs in through instance 0 (scripted sign-in and consent at the PDS): the cookie header. */
  async login(): Promise<string> {
    const jar = new CookieJar();
    const first = this.instances[0]!;
    const start = await this.call(first, 'GET', `/oauth/login?input=${this.account.handle}`, {
      cookie: '',
      jar,
    });
    const location = (start.headers as Record<string, unknown>).location;
    if (start.status !== 302 || typeof location !== 'string') {
      throw new Error(`login did not redirect: ${start.status} ${JSON.stringify(start.body)}`);
    }
    const { callbackParams } = await signInAndConsent(location, {
      username: this.account.handle,
      password: this.account.password,
    });
    const callback = await this.call(first, 'GET', `/oauth/callback?${callbackParams}`, {
      cookie: jar.header(),
      jar,
    });
    if (callback.status !== 302) {
      throw new Error(`callback failed: ${callback.status} ${JSON.stringify(callback.body)}`);
    }
    return jar.header();
  }

  /** One request to one instance, as a same-origin API client with the session cookie. */
  async call(
    instance: AppInstance,
    method: 'GET' | 'POST',
    path: string,
    options: { cookie: string; jar?: CookieJar },
  ): Promise<ApiResult & { headers: Record<string, string | string[] | undefined> }> {
    const res = await request(`${instance.url}${path}`, {
      method,
      dispatcher: this.http,
      headers: {
        accept: 'application/json',
        ...(options.cookie ? { cookie: options.cookie } : {}),
        ...(method === 'POST' ? { origin: this.publicUrl, 'sec-fetch-site': 'same-origin' } : {}),
      },
      // No client-side timeout shorter than the lock's wait budget (30 s) plus a refresh.
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
    });
    options.jar?.store(res.headers['set-cookie']);
    const text = await res.body.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.statusCode, body, instance: instance.index, headers: res.headers };
  }

  /** `GET /api/session` (restore + a call to the PDS as the user). */
  session(instance: AppInstance, cookie: string): Promise<ApiResult> {
    return this.call(instance, 'GET', '/api/session', { cookie });
  }

  /** `POST /api/refresh` (a forced refresh, then a call to the PDS). */
  forceRefresh(instance: AppInstance, cookie: string): Promise<ApiResult> {
    return this.call(instance, 'POST', '/api/refresh', { cookie });
  }

  /** `count` concurrent `GET /api/session`, round-robin over the instances. */
  burst(count: number, cookie: string): Promise<ApiResult[]> {
    return Promise.all(
      Array.from({ length: count }, (_, i) =>
        this.session(this.instances[i % this.instances.length]!, cookie),
      ),
    );
  }

  /** Makes the stored access token of `did` expired a second ago (nothing else changes). */
  async expireAccessToken(did: string): Promise<void> {
    const stored = await this.sessionStore.get(did);
    if (!stored) throw new Error(`no stored OAuth session for ${did}`);
    stored.tokenSet.expires_at = new Date(Date.now() - 1000).toISOString();
    await this.sessionStore.set(did, stored);
  }

  /** {@link refreshTokenHash} of the stored refresh token, or undefined without a session. */
  async storedRefreshToken(did: string): Promise<string | undefined> {
    const token = (await this.sessionStore.get(did))?.tokenSet.refresh_token;
    return token === undefined ? undefined : refreshTokenHash(token);
  }

  async stop(): Promise<void> {
    const errors: unknown[] = [];
    const attempt = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (error) {
        errors.push(error);
      }
    };
    await attempt(() => this.stopInstances());
    await attempt(() => this.pds.stop());
    await attempt(() => this.http.close());
    await attempt(() => this.dataSource.destroy());
    await attempt(() => this.dropDatabase());
    if (!process.env.MI_KEEP_LOGS)
      await attempt(() => rm(this.dir, { recursive: true, force: true }));
    else console.log(`[multi-instance] logs kept in ${this.dir}`);
    if (errors.length) throw new AggregateError(errors, 'stopping the cluster failed');
  }
}

// --- reading the PDS's log --------------------------------------------------------------

/** Refresh requests the PDS handled as such (a `use_dpop_nonce` challenge is not one). */
export function refreshAttempts(requests: OAuthEndpointRequest[]): OAuthEndpointRequest[] {
  return requests.filter((r) => r.grantType === 'refresh_token' && r.error !== 'use_dpop_nonce');
}

/** A compact description for assertion messages. */
export function describeRequests(requests: OAuthEndpointRequest[]): string {
  return JSON.stringify(
    requests.map((r) => ({
      grant: r.grantType,
      status: r.status ?? r.answeredStatus ?? 'pending',
      error: r.error,
      desc: r.errorDescription,
      nonce: r.dpopNonce,
      presented: r.presentedRefreshToken,
      issued: r.issuedRefreshToken,
    })),
  );
}

/** Counts answers by status, e.g. `{ 200: 248, 401: 2 }`. */
export function statusCounts(results: ApiResult[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const r of results) counts[r.status] = (counts[r.status] ?? 0) + 1;
  return counts;
}

/** Polls `probe` until it returns a value other than `undefined` (or throws after `ms`). */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  ms = 30_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}
