/**
 * The user's path from the published tarball: `npm run build` + `npm pack`, then two fresh
 * apps that `npm install` the tarball, compile with tsc (strict, NodeNext, the library's
 * .d.ts checked) and boot:
 * - NestJS 12 as ESM (`"type": "module"`),
 * - NestJS 11 as CommonJS, which loads the ESM-only library with Node's `require(esm)`.
 * Each app serves the module's OAuth documents and is guarded by the global guard.
 *
 * Takes about a minute with a warm npm cache (several with a cold one): the installs hit the
 * registry.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  buildAndPack,
  generateSecrets,
  readJson,
  run,
  startApp,
  writeApp,
  type AppFlavour,
  type PackedLibrary,
  type RunningApp,
} from './support/packaging.js';

/** Each setup hook (build + pack, or install + tsc + boot of one app) gets this long. */
const SETUP_TIMEOUT_MS = 10 * 60_000;

const repoDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const repoPkg = readJson<{ name: string }>(join(repoDir, 'package.json'));
const workDir = mkdtempSync(join(tmpdir(), 'atproto-pack-'));
const timings: Record<string, number> = {};
const secrets = generateSecrets();
let packed: PackedLibrary;

beforeAll(async () => {
  packed = await buildAndPack(repoDir, workDir, join(workDir, 'tarball'));
  timings['build'] = packed.buildMs;
  timings['pack'] = packed.packMs;
}, SETUP_TIMEOUT_MS);

afterAll(() => {
  rmSync(workDir, { recursive: true, force: true });
  const line = Object.entries(timings)
    .map(([step, ms]) => `${step} ${(ms / 1000).toFixed(1)}s`)
    .join(', ');
  console.log(`package e2e durations: ${line}`);
});

describe('the packed tarball', () => {
  it('ships the built entry points with their typings', () => {
    expect(packed.files).toEqual(
      expect.arrayContaining([
        'package.json',
        'dist/index.js',
        'dist/index.d.ts',
        'dist/testing/index.js',
        'dist/testing/index.d.ts',
      ]),
    );
  });

  it('ships no tests, samples or TypeScript sources', () => {
    const offending = packed.files.filter(
      (file) =>
        /\.spec\./.test(file) ||
        /(^|\/)(test|tests|sample|lib|src)\//.test(file) ||
        (/\.(c|m)?tsx?$/.test(file) && !/\.d\.(c|m)?ts$/.test(file)),
    );
    expect(offending).toEqual([]);
  });
});

describe.each<[string, AppFlavour]>([
  ['NestJS 12 ESM app', 'esm'],
  ['NestJS 11 CommonJS app', 'cjs'],
])('%s using the tarball', (_name, flavour) => {
  const appDir = join(workDir, `${flavour}-app`);
  let app: RunningApp | undefined;
  let base: string;

  beforeAll(async () => {
    writeApp(appDir, flavour, packed.tarball);
    timings[`${flavour} npm install`] = (
      await run('npm', ['install', '--no-audit', '--no-fund'], {
        cwd: appDir,
        timeoutMs: 8 * 60_000,
      })
    ).ms;
    timings[`${flavour} tsc`] = (await run('npm', ['run', 'build'], { cwd: appDir })).ms;
    const started = performance.now();
    app = await startApp(appDir, {
      ATPROTO_PRIVATE_JWK: JSON.stringify(secrets.privateJwk),
      ATPROTO_ENC_KEY: secrets.encKey,
    });
    timings[`${flavour} boot`] = performance.now() - started;
    base = `http://127.0.0.1:${app.port}`;
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    await app?.stop();
  });

  it('resolved the NestJS major it was written for', () => {
    const common = readJson<{ version: string }>(
      join(appDir, 'node_modules/@nestjs/common/package.json'),
    );
    expect(common.version).toMatch(flavour === 'esm' ? /^12\./ : /^11\./);
    const lib = readJson<{ name: string }>(
      join(appDir, 'node_modules', repoPkg.name, 'package.json'),
    );
    expect(lib.name).toBe(repoPkg.name);
  });

  it('compiled to the module system of the app', () => {
    const js = readFileSync(join(appDir, 'dist/app.module.js'), 'utf8');
    if (flavour === 'cjs') expect(js).toContain(`require("${repoPkg.name}")`);
    else expect(js).toContain(`from '${repoPkg.name}'`);
  });

  it('serves the confidential client metadata', async () => {
    const res = await fetch(`${base}/oauth/client-metadata.json`);
    expect(res.status).toBe(200);
    const metadata = (await res.json()) as Record<string, unknown>;
    expect(metadata).toMatchObject({
      client_id: 'https://app.example.test/oauth/client-metadata.json',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks_uri: 'https://app.example.test/oauth/jwks.json',
      redirect_uris: ['https://app.example.test/oauth/callback'],
      dpop_bound_access_tokens: true,
    });
  });

  it('publishes only the public half of the signing key', async () => {
    const res = await fetch(`${base}/oauth/jwks.json`);
    expect(res.status).toBe(200);
    const { keys } = (await res.json()) as { keys: Record<string, unknown>[] };
    expect(keys).toHaveLength(1);
    const [key] = keys;
    expect(key).toMatchObject({
      kty: 'EC',
      crv: 'P-256',
      kid: 'pack-test-key',
      x: secrets.privateJwk['x'],
      y: secrets.privateJwk['y'],
    });
    expect(key).not.toHaveProperty('d');
  });

  it('lets @Public() routes through and guards the others', async () => {
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ ok: true });
    expect((await fetch(`${base}/me`)).status).toBe(401);
    expect((await fetch(`${base}/session`)).status).toBe(401);
  });

  it('loads the "./testing" export', async () => {
    const script =
      flavour === 'cjs'
        ? `console.log(require('./dist/testing-entry.js').kind)`
        : `import('./dist/testing-entry.js').then((m) => console.log(m.kind))`;
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: appDir });
    expect(stdout.trim()).toBe('function');
  });
});
