/**
 * What users read must work: for README.md and docs/getting-started.md, a fresh NestJS 12
 * app (ESM, strict TypeScript) is made the way the document says, from the packed tarball:
 *
 * 1. the scaffold `nest new` gives (package.json, tsconfig.json, src/main.ts), then every
 *    ```` ```ts file=<path> ```` block written to its path;
 * 2. the document's ```` ```sh install ```` commands, run as written (one `npm install`), with
 *    `nestjs-atproto-auth` replaced by the tarball; every package its code imports must be
 *    one the app then depends on;
 * 3. its ```` ```sh env=NAME ```` blocks run to make the keys they describe;
 * 4. `tsc` over the files and every ```` ```ts fragment ```` (in a harness that adds only the
 *    imports the fragment leaves out); getting-started's app also checks the fragments of
 *    configuration.md, deployment.md and encryption.md;
 * 5. its ```` ```sh run ```` commands (the TypeORM CLI with the document's data-source file);
 * 6. `node dist/main.js` with the environment variables its code reads, on SQLite: the app
 *    must serve its `@Public()` route, the module's client metadata, and 401 on a guarded
 *    route.
 *
 * About two minutes with a warm npm cache (the installs use `--prefer-offline`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  buildAndPack,
  childEnv,
  generateSecrets,
  readJson,
  run,
  type PackedLibrary,
} from '../package/support/packaging.js';
import {
  fragmentHarness,
  importedPackages,
  isTypeScript,
  readDocBlocks,
  readEnvNames,
  shellCommands,
  type DocBlock,
  type FragmentScope,
} from './support/doc-blocks.js';

const SETUP_TIMEOUT_MS = 10 * 60_000;
const STEP_TIMEOUT_MS = 5 * 60_000;
const PUBLIC_URL = 'https://app.example.test';

const repoDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const workDir = mkdtempSync(join(tmpdir(), 'atproto-docs-'));
const secrets = generateSecrets();
const timings: Record<string, number> = {};
let packed: PackedLibrary;

interface DocApp {
  doc: string;
  /** Other documents whose fragments are type-checked in this app (their files are not assembled). */
  fragmentsFrom: string[];
  /** What the output of the document's `sh run` commands must show, if it has any. */
  runOutput?: RegExp;
}

const DOC_APPS: DocApp[] = [
  { doc: 'README.md', fragmentsFrom: [] },
  {
    doc: 'docs/getting-started.md',
    fragmentsFrom: [
      'docs/configuration.md',
      'docs/deployment.md',
      'docs/encryption.md',
      'docs/storage.md',
      'docs/native-apps.md',
      'docs/api-keys.md',
      'docs/service-auth.md',
    ],
    // migration:show lists the shipped migration as applied ([X]) by migration:run.
    runOutput: /\[X\].*AtProtoInit1763800000000/,
  },
];

/**
 * Values of the environment variables a document's code may read without saying how to make
 * them; the document's own `sh env=NAME` blocks take precedence.
 */
const KNOWN_ENV: Record<string, string> = {
  PUBLIC_URL,
  ATPROTO_PRIVATE_JWK_1: JSON.stringify(secrets.privateJwk),
  ATPROTO_ENC_KEY: secrets.encKey,
};

/** What `nest new` gives, as an ESM NestJS 12 app. */
const SCAFFOLD_PACKAGE = {
  name: 'docs-app',
  version: '0.0.1',
  private: true,
  type: 'module',
  scripts: { build: 'tsc -p tsconfig.json', start: 'node dist/main.js' },
  dependencies: {
    '@nestjs/common': '^12.0.0',
    '@nestjs/core': '^12.0.0',
    '@nestjs/platform-express': '^12.0.0',
    'reflect-metadata': '^0.2.0',
    rxjs: '^7.8.0',
  },
  devDependencies: {
    '@nestjs/testing': '^12.0.0',
    '@types/node': '^24.0.0',
    typescript: '~6.0.3',
  },
};
const SCAFFOLD_TSCONFIG = {
  compilerOptions: {
    target: 'ES2023',
    module: 'nodenext',
    moduleResolution: 'nodenext',
    strict: true,
    experimentalDecorators: true,
    emitDecoratorMetadata: true,
    skipLibCheck: true,
    declaration: false,
    types: ['node'],
    rootDir: 'src',
    outDir: 'dist',
  },
  include: ['src'],
};
const SCAFFOLD_MAIN = `import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';

async function bootstrap() {
  const app = await NestFactory.create(AppModule);
  await app.listen(process.env.PORT ?? 3000);
}
void bootstrap();
`;

/** Names a fragment may use without importing them, and where the harness imports them from. */
function fragmentScope(): FragmentScope {
  const imports: Record<string, string> = {};
  const fromList = (file: string, module: string): void => {
    for (const line of readFileSync(join(repoDir, 'test/package', file), 'utf8').split('\n')) {
      const name = line.replace(/^type /, '').trim();
      if (name) imports[name] = module;
    }
  };
  fromList('public-api.txt', 'nestjs-atproto-auth');
  fromList('public-api-testing.txt', 'nestjs-atproto-auth/testing');
  const known: Record<string, string[]> = {
    '@nestjs/common': ['Body', 'Controller', 'Get', 'Inject', 'Injectable', 'Module', 'Post'],
    '@nestjs/core': ['APP_GUARD', 'NestFactory', 'Reflector'],
    '@nestjs/config': ['ConfigModule', 'ConfigService'],
    '@nestjs/typeorm': ['TypeOrmModule'],
    '@nestjs/testing': ['Test'],
    '@atproto/api': ['Agent'],
    typeorm: ['DataSource'],
  };
  for (const [module, names] of Object.entries(known)) {
    for (const name of names) imports[name] = module;
  }
  return {
    imports,
    // The reader's own values that fragments use.
    declarations: { dataSource: 'declare const dataSource: DataSource;' },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** Runs one shell command line in `cwd`; rejects with its output when it fails. */
function sh(command: string, cwd: string, env: NodeJS.ProcessEnv): ReturnType<typeof run> {
  return run('sh', ['-c', command], { cwd, env, timeoutMs: STEP_TIMEOUT_MS });
}

interface RunningApp {
  output: () => string;
  stop: () => Promise<void>;
}

/** Starts `node dist/main.js` and resolves once it answers HTTP on `port`. */
async function bootApp(dir: string, env: NodeJS.ProcessEnv, port: number): Promise<RunningApp> {
  const child: ChildProcess = spawn(process.execPath, ['dist/main.js'], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the app exited at boot:\n${output.slice(-6000)}`);
    }
    try {
      await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2_000) });
      return { output: () => output, stop };
    } catch {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  await stop();
  throw new Error(`the app did not answer on port ${port} within 60 s:\n${output.slice(-6000)}`);
}

/** Where a fragment is type-checked: in src/, so that its `./x.js` imports mean what they say. */
function fileName(doc: string, block: DocBlock): string {
  return `src/doc-fragment-${doc.replace(/\.md$/, '').replace(/[^\w]+/g, '-')}-L${block.line}.ts`;
}

/** The type-checked copy of a file block that lives outside src/. */
function checkedCopy(block: DocBlock): string {
  return `src/doc-file-${(block.attrs['file'] ?? '').replace(/\.ts$/, '').replace(/[^\w]+/g, '-')}.ts`;
}

beforeAll(async () => {
  // DOCS_TEST_TARBALL=<path of a packed .tgz> skips the build and pack, e.g. while editing
  // the documents.
  const prebuilt = process.env.DOCS_TEST_TARBALL;
  packed = prebuilt
    ? { tarball: resolve(prebuilt), files: [], buildMs: 0, packMs: 0 }
    : await buildAndPack(repoDir, workDir, join(workDir, 'tarball'));
  timings['build + pack'] = packed.buildMs + packed.packMs;
}, SETUP_TIMEOUT_MS);

afterAll(() => {
  rmSync(workDir, { recursive: true, force: true });
  const line = Object.entries(timings)
    .map(([step, ms]) => `${step} ${(ms / 1000).toFixed(1)}s`)
    .join(', ');
  console.log(`docs e2e durations: ${line}`);
});

describe.each(DOC_APPS)('the app $doc describes', ({ doc, fragmentsFrom, runOutput }) => {
  const blocks = readDocBlocks(repoDir, doc);
  const files = blocks.filter((b) => isTypeScript(b) && 'file' in b.attrs);
  const fragments = [doc, ...fragmentsFrom]
    .flatMap((d) => (d === doc ? blocks : readDocBlocks(repoDir, d)))
    .filter((b) => isTypeScript(b) && 'fragment' in b.attrs);
  const installs = blocks.filter((b) => b.lang === 'sh' && 'install' in b.attrs);
  const envBlocks = blocks.filter((b) => b.lang === 'sh' && 'env' in b.attrs);
  const runs = blocks.filter((b) => b.lang === 'sh' && 'run' in b.attrs);
  const appDir = join(workDir, doc.replace(/[^\w]+/g, '-'));
  const env: Record<string, string> = {};
  /** Each file tsc sees -> the block it comes from, and how many lines precede the block's. */
  const sources = new Map<string, { block: DocBlock; before: number }>();
  let baseEnv: NodeJS.ProcessEnv;
  let app: RunningApp | undefined;
  let port: number;

  beforeAll(async () => {
    if (files.length === 0) throw new Error(`${doc} has no \`ts file=<path>\` block`);
    if (installs.length === 0) throw new Error(`${doc} has no \`sh install\` block`);
    mkdirSync(join(appDir, 'src'), { recursive: true });
    writeFileSync(join(appDir, 'package.json'), `${JSON.stringify(SCAFFOLD_PACKAGE, null, 2)}\n`);
    writeFileSync(join(appDir, 'tsconfig.json'), `${JSON.stringify(SCAFFOLD_TSCONFIG, null, 2)}\n`);
    writeFileSync(join(appDir, 'src/main.ts'), SCAFFOLD_MAIN);
    for (const block of files) {
      sources.set(block.attrs['file'] ?? '', { block, before: 0 });
      sources.set(checkedCopy(block), { block, before: 0 });
      const path = join(appDir, block.attrs['file'] ?? '');
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, block.code);
      // A file outside src/ (the TypeORM CLI's data-source.ts) is not part of the app's
      // build; a copy under src/ gets it type-checked too (such a file imports packages only).
      if (!block.attrs['file']?.startsWith('src/')) {
        writeFileSync(join(appDir, checkedCopy(block)), block.code);
      }
    }
    const scope = fragmentScope();
    for (const block of fragments) {
      const text = fragmentHarness(block, scope);
      writeFileSync(join(appDir, fileName(block.doc, block)), text);
      // The fragment is the end of the file: its first line follows the harness's lines.
      const before = text.split('\n').length - block.code.split('\n').length;
      sources.set(fileName(block.doc, block), { block, before });
    }

    // npm's own settings, not changes to the commands: no audit or funding calls, and the
    // local cache first (a cold cache still fetches).
    baseEnv = childEnv({
      npm_config_audit: 'false',
      npm_config_fund: 'false',
      npm_config_prefer_offline: 'true',
      npm_config_update_notifier: 'false',
    });
    const started = performance.now();
    for (const block of installs) {
      for (const command of shellCommands(block.code)) {
        const withTarball = command.replace(
          /(^|\s)nestjs-atproto-auth(?=\s|$)/g,
          `$1${JSON.stringify(packed.tarball)}`,
        );
        await sh(withTarball, appDir, baseEnv);
      }
    }
    timings[`${doc} install`] = performance.now() - started;

    for (const block of envBlocks) {
      const name = block.attrs['env'] ?? '';
      const { stdout } = await sh(shellCommands(block.code).join('\n'), appDir, baseEnv);
      env[name] = stdout.trim();
      if (!env[name]) throw new Error(`${doc}:${block.line} printed no value for ${name}`);
    }
    port = await freePort();
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    await app?.stop();
  });

  it('installs every package its code imports', () => {
    const pkg = readJson<{
      dependencies?: Record<string, string>;
      devDependencies?: Record<string, string>;
    }>(join(appDir, 'package.json'));
    const installed = new Set([
      ...Object.keys(pkg.dependencies ?? {}),
      ...Object.keys(pkg.devDependencies ?? {}),
    ]);
    const missing = [...files, ...fragments].flatMap((block) =>
      importedPackages(block.code)
        .filter((name) => !installed.has(name))
        .map((name) => `${block.doc}:${block.line} imports ${name}`),
    );
    // Each of these must be in the document's install commands (or be a peer the app has).
    expect(missing).toEqual([]);
  });

  it('makes the keys it describes', () => {
    for (const block of envBlocks) {
      const name = block.attrs['env'] ?? '';
      if (/JWK/.test(name)) {
        const jwk = JSON.parse(env[name] ?? '') as Record<string, unknown>;
        expect(jwk).toMatchObject({ kty: 'EC', crv: 'P-256', kid: expect.any(String) });
        expect(jwk['d']).toEqual(expect.any(String));
      } else if (/ENC_KEY/.test(name)) {
        expect(Buffer.from(env[name] ?? '', 'base64')).toHaveLength(32);
      }
    }
  });

  it(
    'compiles its files and fragments (strict TypeScript)',
    async () => {
      const started = performance.now();
      try {
        await run('npm', ['run', 'build'], { cwd: appDir, env: baseEnv });
      } catch (error) {
        // Point each compiler error at the document line it comes from.
        const message = (error as Error).message.replace(
          /^(\S+\.ts)\((\d+),(\d+)\)/gm,
          (all, file: string, line: string) => {
            const source = sources.get(file);
            if (!source) return all;
            const docLine = source.block.line + Number(line) - source.before;
            return `${source.block.doc}:${docLine} (${all})`;
          },
        );
        const where = [...files, ...fragments]
          .map((b) => {
            const path = 'file' in b.attrs ? b.attrs['file'] : fileName(b.doc, b);
            const copy = path?.startsWith('src/') ? '' : ` (checked as ${checkedCopy(b)})`;
            return `  ${path}${copy} ← ${b.doc}:${b.line}`;
          })
          .join('\n');
        throw new Error(`${message}\n\nwhere the files come from:\n${where}`, {
          cause: error,
        });
      }
      timings[`${doc} tsc`] = performance.now() - started;
    },
    STEP_TIMEOUT_MS,
  );

  it(
    'boots on SQLite with the environment its code reads, and answers',
    async () => {
      const names = readEnvNames(files.map((b) => b.code).join('\n'));
      const unknown = names.filter((name) => env[name] === undefined && !(name in KNOWN_ENV));
      // A variable the code reads must be one the document makes (`sh env=NAME`) or one
      // whose value is the deployment's choice (KNOWN_ENV above).
      expect(unknown).toEqual([]);
      const prose = readFileSync(join(repoDir, doc), 'utf8');
      // ...and the document must name it, so that readers know to set it.
      expect(names.filter((name) => !prose.includes(name))).toEqual([]);
      const appEnv = {
        ...baseEnv,
        ...Object.fromEntries(names.map((name) => [name, env[name] ?? KNOWN_ENV[name] ?? ''])),
        ...env,
        PORT: String(port),
        NO_COLOR: '1',
      };

      for (const block of runs) {
        for (const command of shellCommands(block.code)) {
          const { stdout, stderr } = await sh(command, appDir, appEnv);
          if (runOutput && /migration:show/.test(command)) {
            expect(`${stdout}${stderr}`).toMatch(runOutput);
          }
        }
      }
      if (runOutput) expect(runs.length).toBeGreaterThan(0);

      const started = performance.now();
      app = await bootApp(appDir, appEnv, port);
      timings[`${doc} boot`] = performance.now() - started;
      const base = `http://127.0.0.1:${port}`;

      const health = await fetch(`${base}/health`);
      expect({ status: health.status, body: await health.text() }).toEqual({
        status: 200,
        body: JSON.stringify({ ok: true }),
      });
      const metadata = await fetch(`${base}/oauth/client-metadata.json`);
      expect(metadata.status).toBe(200);
      expect(await metadata.json()).toMatchObject({
        client_id: `${PUBLIC_URL}/oauth/client-metadata.json`,
        token_endpoint_auth_method: 'private_key_jwt',
      });
      expect((await fetch(`${base}/me`)).status).toBe(401);
      // The app kept its database where the document put it (SQLite, not memory).
      expect(existsSync(join(appDir, 'app.sqlite'))).toBe(true);
    },
    STEP_TIMEOUT_MS,
  );
});
