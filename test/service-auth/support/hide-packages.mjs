// `node --import <this> …` with HIDE_PACKAGES="a,b": those packages resolve as if they were
// not installed (ERR_MODULE_NOT_FOUND, what Node throws for a missing package), so that a
// test can boot the module as a user who did not install an optional peer would.
import { registerHooks } from 'node:module';

const hidden = new Set((process.env.HIDE_PACKAGES ?? '').split(',').filter(Boolean));

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (hidden.has(specifier)) {
      const error = new Error(`Cannot find package '${specifier}'`);
      error.code = 'ERR_MODULE_NOT_FOUND';
      throw error;
    }
    return nextResolve(specifier, context);
  },
});
