/**
 * How a request proved who it is:
 * - `cookie`: the app-session cookie a browser got at login;
 * - `bearer`: `Authorization: Bearer <access token>` from a native or CLI app's token pair;
 * - `api-key`: `Authorization: Bearer <API key>` from a bot or service.
 * @publicApi
 */
export type AtProtoCredentialKind = 'cookie' | 'bearer' | 'api-key';

/** Every credential kind, in a stable order. @internal */
export const AT_PROTO_CREDENTIAL_KINDS: readonly AtProtoCredentialKind[] = [
  'cookie',
  'bearer',
  'api-key',
];
