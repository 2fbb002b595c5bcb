// `node --import ./ts-hooks.mjs some.ts`: lets Node's built-in type stripping (Node >= 22.18
// / 24) run the project's TypeScript, whose relative imports use the emitted `.js` names.
// Maps such an import from a `.ts` file to the `.ts` source when it exists, nothing more.
// Used by `npm run sample:pds` and by the multi-instance tests' PDS process.
import { existsSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { fileURLToPath } from 'node:url';

registerHooks({
  resolve(specifier, context, nextResolve) {
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
});
