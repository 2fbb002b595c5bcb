import type { ResolvedApiKeyOptions } from '../api-keys/api-key-options.js';
import type { AtProtoCredentialKind } from '../credentials/credentials.js';
import type { ResolvedNativeOptions } from '../native/native-options.js';
import type { ResolvedServiceAuthOptions } from '../service-auth/service-auth-options.js';
import type { ResolvedBotOptions } from '../bots/bot-options.js';
import type { OAuthClientMetadataInput } from '@atproto/oauth-client-node';
import type { Key } from '@atproto/oauth-client-node';
import type { KeyRing } from '../crypto/key-ring.js';
import type { DeclaredScopes } from '../scopes/oauth-scopes.js';
import type { TransientRetryOptions } from '../storage/transient-retry.js';

/**
 * The module's options after validation, with every default filled in.
 * @publicApi
 */
export interface ResolvedAtProtoOptions {
  /** `publicUrl` without a trailing slash. */
  readonly publicUrl: string;
  /** Origin of `publicUrl`, for same-origin checks. */
  readonly origin: string;
  /** `confidential` (https, private_key_jwt) or `loopback` (http://127.0.0.1 development client). */
  readonly clientMode: 'confidential' | 'loopback';
  readonly routePrefix: string;
  /** Absolute URLs of the module's routes. */
  readonly urls: {
    readonly clientMetadata: string;
    readonly jwks: string;
    readonly login: string;
    readonly callback: string;
    readonly logout: string;
  };
  readonly clientMetadata: OAuthClientMetadataInput;
  /** The signing keys, the active one first (new sessions are bound to it). */
  readonly signingKeys: readonly Key[];
  /** `kid` of the active signing key (confidential client only). */
  readonly activeSigningKid: string | undefined;
  readonly keyRing: KeyRing;
  /** What every login asks for (the `scope` option). */
  readonly scope: string;
  /** `scope` and `optionalScopes`: what the client metadata declares. */
  readonly declaredScopes: DeclaredScopes;
  readonly cookie: {
    readonly sessionName: string;
    readonly loginName: string;
    readonly secure: boolean;
    readonly sameSite: 'lax' | 'none';
    readonly domain: string | undefined;
  };
  readonly appSession: {
    readonly idleTtlMs: number;
    readonly absoluteTtlMs: number;
    readonly cacheTtlMs: number;
    readonly cacheMaxEntries: number;
    /** Cache lifetime while revocations elsewhere are known to reach this instance. */
    readonly invalidatedCacheTtlMs: number;
  };
  readonly oauthSessionRetentionMs: number;
  readonly stateTtlMs: number;
  readonly globalGuard: boolean;
  readonly afterLoginPath: string;
  readonly afterLogoutPath: string;
  readonly storage: 'typeorm' | 'memory';
  readonly dataSourceName: string | undefined;
  readonly httpTimeoutMs: number;
  readonly storeRetry: TransientRetryOptions | undefined;
  readonly cleanup: {
    readonly enabled: boolean;
    readonly intervalMs: number;
    readonly batchSize: number;
    readonly revokedGraceMs: number;
    readonly revokeUnusedOAuthSessions: boolean;
  };
  readonly redis: string | undefined;
  readonly redisStore: boolean;
  readonly redisKeyPrefix: string;
  readonly redisCaches: boolean;
  readonly handleResolver: string | undefined;
  readonly plcDirectoryUrl: string | undefined;
  readonly allowHttpServers: boolean;
  /** `dangerouslyAllowPrivateHosts`, validated: `host` or `host:port` entries. */
  readonly privateHosts: readonly string[];
  /** Native and CLI apps, when configured. */
  readonly native: ResolvedNativeOptions | undefined;
  readonly apiKeys: ResolvedApiKeyOptions;
  /** The cache of outbound service-auth tokens. */
  readonly serviceAuth: ResolvedServiceAuthOptions;
  /** Bot accounts on app passwords. */
  readonly bots: ResolvedBotOptions;
  /** Credentials routes accept by default. */
  readonly credentialsAllow: readonly AtProtoCredentialKind[];
  /** Origins of single-page apps on another origin that use the cookie flow. */
  readonly trustedOrigins: readonly string[];
}
