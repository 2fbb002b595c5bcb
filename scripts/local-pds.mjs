#!/usr/bin/env node
// `npm run sample:pds`: runs sample/local-pds.ts (a local PLC + PDS with an alice.test
// account) directly with Node's built-in TypeScript type stripping (Node >= 22.18 / 24).
// The project's TypeScript imports relative files by their emitted `.js` names, which
// Node does not map back to `.ts` sources: this resolve hook does exactly that, nothing more.
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

await import('../sample/local-pds.ts');
