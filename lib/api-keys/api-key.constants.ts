/**
 * Injection token of the API key store in use (an `AtProtoApiKeyStore`): a
 * `TypeOrmApiKeyStore` on the app's DataSource, or a `MemoryApiKeyStore` with
 * `storage: 'memory'`.
 * @publicApi
 */
export const AT_PROTO_API_KEY_STORE = Symbol('AT_PROTO_API_KEY_STORE');
