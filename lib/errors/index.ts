export * from './at-proto.error.js';
export * from './at-proto-config.error.js';
export * from './at-proto-decryption.error.js';
export * from './at-proto-key-ring-unavailable.error.js';
export * from './at-proto-store.error.js';
export * from './at-proto-http.errors.js';
export * from './at-proto-lock.error.js';
export * from './at-proto-service-auth.error.js';
