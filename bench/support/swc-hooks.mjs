// `node --import ./bench/support/swc-hooks.mjs some.ts`: runs the project's TypeScript in a
// plain Node process, decorators and their type metadata included, which Nest's dependency
// injection needs and Node's own type stripping does not emit. The transform is the one the
// tests use (the `@swc/jest` options in package.json), through @swc/core, already a dev
// dependency; the package's own name resolves to the sources (lib/index.ts), as under Jest.
// Used by `npm run bench`, whose server and load-generator processes run outside Jest.
import { existsSync, readFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { transformSync } from '@swc/core';

const ROOT = new URL('../../', import.meta.url);
const SELF = {
  'nestjs-atproto-auth': new URL('lib/index.ts', ROOT).href,
  'nestjs-atproto-auth/testing': new URL('lib/testing/index.ts', ROOT).href,
};
const packageJson = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8'));
const [, jestSwcOptions] = packageJson.jest.transform['^.+\\.ts$'];

registerHooks({
  resolve(specifier, context, nextResolve) {
    const self = SELF[specifier];
    if (self) return nextResolve(self, context);
    if (
      /^\.{1,2}\//.test(specifier) &&
      specifier.endsWith('.js') &&
      context.parentURL?.endsWith('.ts')
    ) {
      const candidate = new URL(`${specifier.slice(0, -3)}.ts`, context.parentURL);
      if (existsSync(fileURLToPath(candidate))) return nextResolve(candidate.href, context);
    }
    return nextResolve(specifier, context);
  },
  load(url, context, nextLoad) {
    if (!url.startsWith('file:') || !url.endsWith('.ts') || url.includes('/node_modules/')) {
      return nextLoad(url, context);
    }
    const filename = fileURLToPath(url);
    const { code } = transformSync(readFileSync(filename, 'utf8'), {
      ...jestSwcOptions,
      filename,
      swcrc: false,
      configFile: false,
    });
    return { format: 'module', source: code, shortCircuit: true };
  },
});

export { pathToFileURL };
