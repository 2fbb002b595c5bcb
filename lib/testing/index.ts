export {
  defineStoreConformanceTests,
  type ConformanceTestApi,
  type StoreConformanceContext,
  type StoreConformanceOptions,
} from './store-conformance.js';
