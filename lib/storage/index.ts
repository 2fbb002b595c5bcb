export {
  reencrypt,
  type ReencryptFailure,
  type ReencryptOptions,
  type ReencryptProgress,
  type ReencryptResult,
  type ReencryptTable,
  type ReencryptTableCounts,
} from './reencrypt.js';
