#!/usr/bin/env node
// `npm run sample`: builds the library (dist/, which the sample imports as
// `nestjs-atproto-auth` through package.json "exports") and the sample (sample/dist/), then
// runs the sample in the foreground. Environment variables: see sample/README.md.
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

for (const project of ['lib/tsconfig.build.json', 'sample/tsconfig.json']) {
  console.log(`[sample] tsc -p ${project}`);
  const result = spawnSync(process.execPath, [tsc, '-p', project], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`[sample] building ${project} failed`);
    process.exit(result.status ?? 1);
  }
}

const port = process.env.PORT || '3000';
const url = process.env.PUBLIC_URL || `http://127.0.0.1:${port}`;
console.log(`[sample] starting node sample/dist/main.js — open ${url}/ once it is listening`);
const child = spawn(process.execPath, [join(root, 'sample', 'dist', 'main.js')], {
  cwd: root,
  stdio: 'inherit',
  env: process.env,
});

// Ctrl+C reaches the child too (same process group); forwarding covers `kill <pid>`.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  });
}
child.on('exit', (code, signal) => {
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  } else {
    process.exit(code ?? 0);
  }
});
