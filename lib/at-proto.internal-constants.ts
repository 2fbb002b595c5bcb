/**
 * Injection tokens used only inside the module (the public ones are in
 * at-proto.constants.ts).
 * @internal
 */

/** The Redis connection of the session lock, or null without `redis`. @internal */
export const AT_PROTO_LOCK_CONNECTION = Symbol('AT_PROTO_LOCK_CONNECTION');
/** The stores and their cleanup target, built together from one storage choice. @internal */
export const AT_PROTO_STORES = Symbol('AT_PROTO_STORES');
/** The storage's cleanup target. @internal */
export const AT_PROTO_CLEANUP_TARGET = Symbol('AT_PROTO_CLEANUP_TARGET');
/** Name of the BullMQ cleanup queue (kept here: importing the queue module loads BullMQ). @internal */
export const AT_PROTO_CLEANUP_QUEUE = 'atproto-cleanup';
