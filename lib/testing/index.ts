// nestjs-atproto-auth/testing: what users run in their own tests. Kept out of the main entry
// so that production code never loads a test helper.
export {
  defineStoreConformanceTests,
  type ConformanceTestApi,
  type StoreConformanceContext,
  type StoreConformanceOptions,
} from './store-conformance.js';
export {
  AtProtoTestingGuard,
  AtProtoTestingModule,
  createFakeOAuthSession,
  type AtProtoTestingOptions,
} from './at-proto-testing.module.js';
