/**
 * Helpers for test/package/pack.e2e-spec.ts: build and pack the library as npm would publish
 * it, create throwaway NestJS apps that install the tarball like a user, and boot them.
 * @internal
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join, relative, sep } from 'node:path';
import { performance } from 'node:perf_hooks';

export interface RunResult {
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * The environment of every child: the running Node (24) first on PATH so that `npm`, `node`
 * and `tsc` are the ones this test runs on, without the variables of an outer `npm test`
 * (package/lifecycle data) or of Jest (NODE_ENV=test would also leak into `npm install`).
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    if (
      /^npm_(lifecycle|package)_|^npm_command$|^INIT_CWD$|^NODE_OPTIONS$|^NODE_ENV$|^JEST_/.test(
        key,
      )
    ) {
      delete env[key];
    }
  }
  env.PATH = [dirname(process.execPath), env.PATH ?? ''].join(delimiter);
  return { ...env, ...extra };
}

/** Runs a command to completion; rejects with its output when it exits non-zero. */
export function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 5 * 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const ms = performance.now() - started;
      if (code === 0) return resolve({ stdout, stderr, ms });
      reject(
        new Error(
          `\`${command} ${args.join(' ')}\` in ${options.cwd} failed (${signal ?? `exit ${code}`}):\n` +
            `${stdout}\n${stderr}`.trim().slice(-8000),
        ),
      );
    });
  });
}

export interface PackedLibrary {
  tarball: string;
  /** Paths inside the package, e.g. `dist/index.js`, `package.json`. */
  files: string[];
  buildMs: number;
  packMs: number;
}

/**
 * Copies the repository (without node_modules, dist, .git) into `workDir`, links its
 * node_modules, and runs `npm run build` and `npm pack` there: the tarball is what a clean
 * checkout publishes, and the repository's own dist/ (which other work may be using, and
 * which can hold outputs of deleted sources) is left alone.
 */
export async function buildAndPack(
  repoDir: string,
  workDir: string,
  packDest: string,
): Promise<PackedLibrary> {
  const copy = join(workDir, 'lib-copy');
  cpSync(repoDir, copy, {
    recursive: true,
    filter: (src) => {
      const rel = relative(repoDir, src);
      const top = rel.split(sep)[0];
      if (top === 'node_modules' || top === 'dist' || top === '.git' || top === 'coverage')
        return false;
      return !rel.split(sep).includes('node_modules') && !rel.endsWith(`${sep}dist`);
    },
  });
  symlinkSync(join(repoDir, 'node_modules'), join(copy, 'node_modules'), 'dir');
  mkdirSync(packDest, { recursive: true });

  const build = await run('npm', ['run', 'build'], { cwd: copy });
  const pack = await run('npm', ['pack', '--json', '--pack-destination', packDest], { cwd: copy });
  const [info] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as {
    filename: string;
    files: { path: string }[];
  }[];
  if (!info) throw new Error(`npm pack printed no package: ${pack.stdout}`);
  return {
    tarball: join(packDest, info.filename),
    files: info.files.map((f) => f.path),
    buildMs: build.ms,
    packMs: pack.ms,
  };
}

/** A fresh private ES256 JWK (with `kid`) and a base64 AES-256 key, as a user would make them. */
export function generateSecrets(): { privateJwk: Record<string, unknown>; encKey: string } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    privateJwk: { ...jwk, kid: 'pack-test-key', alg: 'ES256' },
    encKey: randomBytes(32).toString('base64'),
  };
}

export type AppFlavour = 'esm' | 'cjs';

/**
 * Writes a minimal NestJS app that depends on the packed tarball: NestJS 12 as ESM
 * (`"type": "module"`) or NestJS 11 as CommonJS (no `"type"`), both compiled by tsc with
 * `module`/`moduleResolution` NodeNext and `strict`. For CommonJS, NodeNext makes tsc emit
 * `require('nestjs-atproto-auth')`, which Node >= 22.12 serves with `require(esm)`.
 */
export function writeApp(dir: string, flavour: AppFlavour, tarball: string): void {
  const nest = flavour === 'esm' ? '^12.0.0' : '^11.0.0';
  const pkg: Record<string, unknown> = {
    name: `pack-test-${flavour}-app`,
    version: '0.0.0',
    private: true,
    ...(flavour === 'esm' ? { type: 'module' } : {}),
    scripts: { build: 'tsc -p tsconfig.json', start: 'node dist/main.js' },
    dependencies: {
      '@nestjs/common': nest,
      '@nestjs/core': nest,
      '@nestjs/platform-express': nest,
      '@nestjs/typeorm': nest,
      'nestjs-atproto-auth': `file:${tarball}`,
      'reflect-metadata': 'latest',
      rxjs: 'latest',
      typeorm: 'latest',
    },
    devDependencies: { '@types/node': '^24.0.0', typescript: '~6.0.3' },
    // No `overrides`: the app installs the tarball exactly as a user's app would.
  };
  const tsconfig = {
    compilerOptions: {
      target: 'ES2023',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      // No `lib`: the default for the target includes DOM, as in the NestJS starter; the
      // typings of @atproto/* (which ours re-export) use DOM names (Body, CryptoKeyPair).
      types: ['node'],
      strict: true,
      experimentalDecorators: true,
      emitDecoratorMetadata: true,
      // Check the library's .d.ts files too, not only the app's use of them.
      skipLibCheck: false,
      rootDir: 'src',
      outDir: 'dist',
    },
    include: ['src'],
  };
  mkdirSync(join(dir, 'src'), { recursive: true });
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  writeFileSync(join(dir, 'tsconfig.json'), `${JSON.stringify(tsconfig, null, 2)}\n`);
  writeFileSync(join(dir, 'src', 'main.ts'), MAIN_TS);
  writeFileSync(join(dir, 'src', 'app.module.ts'), APP_MODULE_TS);
  writeFileSync(join(dir, 'src', 'testing-entry.ts'), TESTING_ENTRY_TS);
}

const MAIN_TS = `import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
  app.enableShutdownHooks();
  await app.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  console.log(\`LISTENING \${port}\`);
}

bootstrap().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
`;

const APP_MODULE_TS = `import { Controller, Get, Module } from '@nestjs/common';
import {
  AtProtoDid,
  AtProtoModule,
  AtProtoSession,
  Public,
  type AtProtoModuleOptions,
  type OAuthSession,
} from 'nestjs-atproto-auth';

@Controller()
export class AppController {
  @Public()
  @Get('health')
  health(): { ok: true } {
    return { ok: true };
  }

  @Get('me')
  me(@AtProtoDid() did: string): { did: string } {
    return { did };
  }

  @Get('session')
  session(@AtProtoSession() session: OAuthSession): { did: string } {
    return { did: session.did };
  }
}

function requireEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(\`\${name} is not set\`);
  return value;
}

const options: AtProtoModuleOptions = {
  publicUrl: 'https://app.example.test',
  keys: [requireEnv('ATPROTO_PRIVATE_JWK')],
  encryption: { activeKeyId: 'k', keys: { k: requireEnv('ATPROTO_ENC_KEY') } },
  storage: 'memory',
};

@Module({
  imports: [AtProtoModule.forRoot(options)],
  controllers: [AppController],
})
export class AppModule {}
`;

/** Compiled and loaded on its own: proves the "./testing" export (types and runtime). */
const TESTING_ENTRY_TS = `import {
  defineStoreConformanceTests,
  type StoreConformanceOptions,
} from 'nestjs-atproto-auth/testing';

export const options: StoreConformanceOptions = { name: 'typing check' };
export const kind: string = typeof defineStoreConformanceTests;
`;

export interface RunningApp {
  port: number;
  output: () => string;
  stop: () => Promise<void>;
}

/** Starts `node dist/main.js` and resolves once it printed the port it listens on. */
export function startApp(
  dir: string,
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<RunningApp> {
  const child: ChildProcess = spawn(process.execPath, ['dist/main.js'], {
    cwd: dir,
    env: childEnv({ PORT: '0', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((resolve, reject) => {
    const fail = (why: string): void => {
      void stop().then(() => reject(new Error(`${why}; app output:\n${output}`)));
    };
    const timer = setTimeout(
      () => fail(`app in ${dir} did not listen within ${timeoutMs} ms`),
      timeoutMs,
    );
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
      const match = /LISTENING (\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve({ port: Number(match[1]), output: () => output, stop });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!/LISTENING \d+/.test(output)) fail(`app exited early (${signal ?? `exit ${code}`})`);
    });
  });
}

export function readJson<T>(file: string): T {
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}
