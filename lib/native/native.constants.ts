/**
 * Injection token of the store of native one-time codes and refresh-token families
 * (`NativeTokenStore`).
 * @internal
 */
export const AT_PROTO_NATIVE_STORE = Symbol('AT_PROTO_NATIVE_STORE');
