import type { KeyRing } from './key-ring.js';

// Why a process-wide slot: TypeORM builds entity metadata, and with it every column's
// ValueTransformer, when the entity classes are decorated at import time, long before
// Nest resolves AtProtoModule's (possibly async) options. A transformer only ever receives
// the value, never the DataSource or a DI container, so it cannot be handed the key ring.
// Instead it looks the ring up here on every call; the module installs the ring from its
// `encryption` option during provider construction, which Nest finishes before any store
// (and therefore any query touching these columns) can run. One process uses one ring.
let installed: KeyRing | undefined;

/**
 * Installs the key ring used by every encrypted column of this library's entities.
 * `AtProtoModule` calls it at boot; call it yourself only in scripts that use the entities
 * without Nest (e.g. a one-off `reencrypt` run).
 * @publicApi
 */
export function installKeyRing(keyRing: KeyRing): void {
  installed = keyRing;
}

/**
 * The installed key ring, or `undefined` before {@link installKeyRing} was called.
 * @publicApi
 */
export function getInstalledKeyRing(): KeyRing | undefined {
  return installed;
}
