// Jest 30 in native ESM mode (run with NODE_OPTIONS=--experimental-vm-modules, see the
// "test" script): NestJS 12 and @atproto/* are ESM-only. @swc/jest compiles TypeScript with
// legacy decorators and decorator metadata (NestJS injects providers by constructor type).
/** @type {import('jest').Config} */
export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/lib', '<rootDir>/test'],
  testMatch: ['**/*.spec.ts', '**/*.e2e-spec.ts'],
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: {
    '^(\\.{1,2}/.*)\\.js$': '$1',
    // The sample imports the library by its package name, as an app would: in tests, the sources.
    '^nestjs-atproto-auth$': '<rootDir>/lib/index.ts',
    '^nestjs-atproto-auth/testing$': '<rootDir>/lib/testing/index.ts',
  },
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      {
        jsc: {
          target: 'es2023',
          parser: { syntax: 'typescript', decorators: true },
          transform: { legacyDecorator: true, decoratorMetadata: true },
        },
        module: { type: 'es6' },
        sourceMaps: 'inline',
      },
    ],
  },
  testTimeout: 60_000,
};
