// `npm run bench`: the benchmarks in bench/, through the same TypeScript/ESM pipeline as the
// tests (decorators, ESM-only packages), one file at a time.
import base from './jest.config.js';

/** @type {import('jest').Config} */
export default {
  ...base,
  roots: ['<rootDir>/bench'],
  testMatch: ['**/*.bench.ts'],
  testTimeout: 600_000,
};
