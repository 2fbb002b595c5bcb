export { KeyRing, type KeyRingOptions } from './key-ring.js';
export { installKeyRing, getInstalledKeyRing } from './key-ring.registry.js';
export { encryptedColumn } from './encrypted-column.transformer.js';
