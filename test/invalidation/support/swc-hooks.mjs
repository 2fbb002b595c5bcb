// `node --import ./swc-hooks.mjs app.ts`: runs the project's TypeScript from source in a
// child process, decorators and their metadata included (which Node's type stripping does
// not support), with the same swc settings as the Jest transform. Maps the package name to
// lib/index.ts and `.js` imports of `.ts` files to their source, like the Jest config.
import { existsSync, readFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { fileURLToPath } from 'node:url';
import swc from '@swc/core';

const ROOT = new URL('../../../', import.meta.url);

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier === 'nestjs-atproto-auth') {
      return nextResolve(new URL('lib/index.ts', ROOT).href, context);
    }
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
    if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
    const filename = fileURLToPath(url);
    const { code } = swc.transformSync(readFileSync(filename, 'utf8'), {
      filename,
      jsc: {
        target: 'es2023',
        parser: { syntax: 'typescript', decorators: true },
        transform: { legacyDecorator: true, decoratorMetadata: true },
      },
      module: { type: 'es6' },
      sourceMaps: 'inline',
    });
    return { format: 'module', source: code, shortCircuit: true };
  },
});
