import type { AtProtoApiKeyOptions } from '../api-keys/api-key-options.js';
import type { AtProtoCredentialKind } from '../credentials/credentials.js';
import type { AtProtoNativeOptions } from '../native/native-options.js';
import type { AtProtoServiceAuthOptions } from '../service-auth/service-auth-options.js';
import type { AtProtoBotOptions } from '../bots/bot-options.js';
import type { KeyRingOptions } from '../crypto/key-ring.js';
import type { TransientRetryOptions } from '../storage/transient-retry.js';

/**
 * A private ES256 signing key for `private_key_jwt` client authentication: a private JWK
 * (object or JSON string) with a `kid`, or a PKCS#8 PEM string together with its `kid`.
 * @publicApi
 */
export type AtProtoSigningKeyInput =
  string | Record<string, unknown> | { kid: string; pem: string };

/**
 * Options of `AtProtoModule.forRoot()` / the factory of `forRootAsync()`. Durations are in
 * milliseconds. Validated once at boot: every problem is reported in one error.
 * @publicApi
 */
export interface AtProtoModuleOptions {
  /**
   * The URL where this backend is reachable from browsers and from AT Protocol servers,
   * including any global route prefix, e.g. `https://app.example.com` or
   * `https://example.com/api`. With `https` the module is a confidential client and needs
   * `keys`. With `http://127.0.0.1:<port>` (the IP, not `localhost`) it runs as the
   * AT Protocol loopback development client: a public client without keys, for trying it
   * locally. Any other `http` URL is refused.
   */
  publicUrl: string;

  /** Shown to users on the authorization server's consent screen. @default 'AT Protocol app' */
  clientName?: string;
  /** Home page of the app (client metadata `client_uri`). @default publicUrl */
  clientUri?: string;
  /** Logo (client metadata `logo_uri`, https). */
  logoUri?: string;
  /** Terms of service (client metadata `tos_uri`, https). */
  tosUri?: string;
  /** Privacy policy (client metadata `policy_uri`, https). */
  policyUri?: string;

  /**
   * OAuth scope requested at login; must contain `atproto`.
   * @default 'atproto transition:generic'
   */
  scope?: string;

  /**
   * Scopes a login may ask for later, on top of `scope`: what `@AtProtoScope()` routes need
   * and step-up logins request. The authorization server refuses any scope the client
   * metadata does not declare, so every scope a login can ask for is declared here, up
   * front (they are added to the metadata's `scope`; a login asks only for `scope` until a
   * route needs more). Concrete permission scopes such as
   * `repo:app.bsky.feed.post?action=create`, `rpc:app.bsky.feed.getFeed?aud=*`,
   * `blob:image/*`, `account:email`, `identity:handle`, `transition:chat.bsky`, or a
   * permission set (`include:<nsid>`). A route that requires a scope neither declared here
   * nor covered by `scope` fails the boot.
   * @default []
   */
  optionalScopes?: readonly string[];

  /**
   * Private ES256 signing keys for `private_key_jwt` (required with an https `publicUrl`),
   * each with a unique `kid`. Their public halves are served at `jwks.json`. Every OAuth
   * session is bound to the `kid` it was created with: keep a retired key listed (it stays
   * published) until the sessions created with it are gone, or those users are logged out.
   */
  keys?: AtProtoSigningKeyInput[];
  /**
   * The `kid` of the key in `keys` that new sessions are bound to; required when `keys` has
   * more than one key. The others stay published (sessions bound to them keep working).
   * Rotate in two deploys: first add the new key to `keys` on every instance (not active),
   * then make it active; an instance that lacks a session's key deletes that session.
   * @default the kid of the only key
   */
  activeSigningKid?: string;

  /**
   * The AES-256-GCM key ring that encrypts tokens, DPoP keys and PKCE verifiers at rest.
   * @example { activeKeyId: '2026-11', keys: { '2026-11': process.env.ATPROTO_ENC_KEY } }
   */
  encryption: KeyRingOptions;

  /** Cookies of the app session and of the login in progress. */
  cookie?: {
    /**
     * Name of the app-session cookie. On https it gets the `__Host-` prefix (Secure,
     * Path=/, no Domain) unless `domain` is set.
     * @default 'atproto_session'
     */
    name?: string;
    /**
     * Cookie domain, to share the session with subdomains: the `publicUrl` host or a parent
     * domain of it (`example.com` for `app.example.com`), never an IP or a single label.
     * It replaces the `__Host-` prefix with `__Secure-`, so every subdomain (and whoever
     * controls one) can then set the session and login cookies: share only with subdomains
     * you trust. Browsers refuse a public suffix such as `co.uk`.
     */
    domain?: string;
    /** `SameSite` attribute. `strict` breaks the redirect back from the authorization server. @default 'lax' */
    sameSite?: 'lax' | 'none';
  };

  /** Lifetimes of the app session (the signed-in device). */
  appSession?: {
    /** Ends after this long without a request. @default 7 days */
    idleTtl?: number;
    /** Ends this long after login, whatever the activity. @default 30 days */
    absoluteTtl?: number;
    /**
     * How long a validated app session is kept in an in-process cache, so that the guard
     * does not read the database on every request. A logout on this instance applies at
     * once; one made on another instance applies here within this time. `0` disables it.
     * @default 2000
     */
    cacheTtl?: number;
    /**
     * Most app sessions (and, separately, API keys) kept in that cache; the least recently
     * used go first. About 0.7 kB of heap each (measured: docs/benchmarks.md, "Memory of
     * the session cache"). @default 100000
     */
    cacheMaxEntries?: number;
    /**
     * How long a validated app session (or API key) may stay in that cache while this
     * instance is sure to hear of revocations made elsewhere: the database's revocation
     * cursor answered within the last 2 s and, with `redis`, the Redis invalidation channel
     * was proven alive within the last 500 ms. Whenever it is not, every entry is dropped
     * and `cacheTtl` applies. `0` (or anything up to `cacheTtl`) keeps `cacheTtl` always.
     * See the deployment docs for the bound in each failure case. @default 300000 (5 minutes)
     */
    invalidatedCacheTtl?: number;
  };

  /**
   * How long an OAuth session is kept after its last refresh (or login) before it is
   * considered expired and deleted by cleanup. Set it to the refresh-token lifetime your
   * users' servers grant. @default 90 days
   */
  oauthSessionRetention?: number;

  /** How long a login may take between `login` and `callback`. @default 30 minutes */
  stateTtl?: number;

  /** Where the callback sends the browser when the login had no `returnTo`. @default '/' */
  afterLoginPath?: string;
  /** Where a form logout sends the browser. @default '/' */
  afterLogoutPath?: string;

  /**
   * Where OAuth state, OAuth sessions and app sessions live. `typeorm` uses the app's
   * DataSource (list `atProtoEntities` and `atProtoMigrations()` in it); `memory` keeps
   * them in this process only (tests, trying things out). @default 'typeorm'
   */
  storage?: 'typeorm' | 'memory';
  /**
   * Time limit of every HTTP request the OAuth client makes (identity resolution, server
   * metadata, PAR, token, revocation), redirects included. It bounds how long a refresh can
   * hold the session lock: the client never aborts a refresh in flight on its own. With
   * `redis`, the distributed lock lives `2 × (httpTimeout + 1 s) + 2 s` (24 s by default),
   * renewed every half of it, and a token refresh is sent only while the lock has at least
   * `httpTimeout` + 1 s left. At most 30000. @default 10000
   */
  httpTimeout?: number;
  /** Retries of transient database failures inside the stores. */
  storeRetry?: TransientRetryOptions;

  /**
   * Deletion of expired OAuth states, OAuth sessions past their retention, and ended app
   * sessions, in batches, and revocation of OAuth sessions no app session uses any more. By
   * default each instance runs it on an in-process timer (deletions are idempotent, so
   * several instances only repeat work); with the `bullmq` extra (needs `redis`), one BullMQ
   * job scheduler runs it once per interval for all instances.
   */
  cleanup?: {
    /** Run cleanup on a schedule. @default true, except when NODE_ENV is 'test' */
    enabled?: boolean;
    /** Time between runs. @default 5 minutes */
    interval?: number;
    /**
     * Rows deleted per statement, at most 10000 (database drivers limit the parameters of
     * one statement). @default 1000
     */
    batchSize?: number;
    /** How long revoked app sessions are kept (e.g. for a "recent devices" page). @default 1 day */
    revokedGrace?: number;
    /**
     * On every run, revoke (at the authorization server) and delete the OAuth sessions that
     * no active app session uses: the user's last device logged out, expired or went idle.
     * This also retries revocations that failed earlier (Redis or the server down at logout).
     * Set `false` if you create OAuth sessions yourself with `AtProtoAuthService.callback()`
     * without app sessions: cleanup then revokes only when it deletes a user's last app
     * session. @default true
     */
    revokeUnusedOAuthSessions?: boolean;
  };

  /**
   * Redis URL (`redis://` or `rediss://`), for many app instances: the distributed session
   * lock (needs `ioredis` and `redlock@5.0.0-beta.2`) and shared OAuth caches; with the
   * `bullmq` extra, cleanup jobs too. Without it the lock and cleanup are in-process.
   */
  redis?: string;
  /**
   * Keep OAuth states and OAuth sessions in Redis (encrypted with the same key ring, with a
   * Redis TTL) instead of the database. App sessions stay in the database. Needs `redis`.
   * @default false
   */
  redisStore?: boolean;
  /** Prefix of every key the module writes in Redis. @default 'atproto:' */
  redisKeyPrefix?: string;
  /**
   * Share the OAuth client's DPoP-nonce, DID, handle and server-metadata caches between
   * instances through Redis (encrypted). @default true when `redis` is set
   */
  redisCaches?: boolean;

  /**
   * Handle resolution: the URL of a service answering
   * `com.atproto.identity.resolveHandle` (e.g. your own PDS), instead of DNS and
   * `/.well-known/atproto-did`. For tests and private deployments.
   */
  handleResolver?: string;
  /** PLC directory to resolve `did:plc` with. @default 'https://plc.directory' */
  plcDirectoryUrl?: string;
  /**
   * Allows authorization servers and PDSes on plain `http` (a local PDS in tests). It does
   * not open private networks: list those hosts in `dangerouslyAllowPrivateHosts`. Never in
   * production. @default false
   */
  allowHttpServers?: boolean;
  /**
   * Private hosts (loopback, LAN) the OAuth client may reach, as `host` or `host:port`
   * (`'localhost:2583'`, `'127.0.0.1:2582'`, `'[::1]:2583'`, `'pds.internal'`); without a
   * port every port of that host is allowed. Every other private, loopback or link-local
   * address stays refused, on the first request and on every redirect hop (login input is
   * user-controlled: without this guard, anyone could make the server send requests into
   * its network). For a local PDS and PLC in development and tests; the list is printed in a
   * warning at boot. @default []
   */
  dangerouslyAllowPrivateHosts?: string[];

  /**
   * Native and CLI apps: the module signs the user in through the system browser, then
   * hands the app an access/refresh token pair (see docs/native-apps.md). Off unless set.
   */
  native?: AtProtoNativeOptions;
  /** API keys for bots and services (see docs/api-keys.md). */
  apiKeys?: AtProtoApiKeyOptions;
  /**
   * Service-auth tokens (see docs/service-auth.md): the cache of those that
   * `AtProtoServiceAuthService` gets from users' PDSes for calls to other AT Protocol
   * services (shared by every instance with `redis`), and the checks of those other services
   * send to `@AtProtoServiceAuth()` routes (`serviceDid`, `maxAge`, `clockSkew`,
   * `replayStore`, `didDocument`).
   */
  serviceAuth?: AtProtoServiceAuthOptions;
  /**
   * Bot accounts that log in with an app password (`AtProtoBotSessionService`, see
   * docs/bots.md): when their access JWTs are refreshed.
   */
  bots?: AtProtoBotOptions;
  /**
   * Which credentials a route accepts unless `@AtProtoCredentials()` says otherwise.
   * @default { allow: ['cookie', 'bearer'] }
   */
  credentials?: { allow?: AtProtoCredentialKind[] };
  /**
   * Origins of single-page apps that use the cookie flow from another origin
   * (`'https://app.example.com'`; https, or `http://127.0.0.1:<port>` in development):
   * `returnTo` may be an absolute URL on them, and unsafe requests that carry the session
   * cookie are accepted when their `Origin` is one of them (start the login with a form
   * `POST <prefix>/login` from there). An origin on another site than `publicUrl` needs
   * `cookie.sameSite: 'none'` (checked at boot); Safari blocks and Firefox partitions such
   * third-party cookies by default, so a cross-site app is better served by the token pair
   * of native apps. CORS stays the app's job (see docs/deployment.md). @default []
   */
  trustedOrigins?: string[];
}

/**
 * Options that shape the module itself and so must be known before any async factory
 * runs: give them to `forRoot()` with the other options, or next to `useFactory` in
 * `forRootAsync()`.
 * @publicApi
 */
export interface AtProtoModuleExtras {
  /** Path under `publicUrl` of the module's routes. @default 'oauth' */
  routePrefix?: string;
  /**
   * Registers `AtProtoAuthGuard` as a global guard: every route needs a signed-in user
   * unless marked `@Public()`. With `false`, put `@UseGuards(AtProtoAuthGuard)` where needed.
   * @default true
   */
  globalGuard?: boolean;
  /** Makes the module's services injectable in every module. @default true */
  isGlobal?: boolean;
  /**
   * Schedule cleanup with a BullMQ job scheduler on `redis` (one run per tick across all
   * instances) instead of an in-process timer in every instance. Needs `redis` and the
   * packages `bullmq` and `@nestjs/bullmq`. @default false
   */
  bullmq?: boolean;
  /**
   * Name of the TypeORM DataSource to store in, when the app has several (the `name` given
   * to `TypeOrmModule.forRoot`). @default the default DataSource
   */
  dataSourceName?: string;
}

/**
 * A provider class that builds the module's options, for `forRootAsync({ useClass })` or
 * `forRootAsync({ useExisting })`: Nest creates (or finds) the class and calls
 * `createAtProtoOptions()` once at boot.
 * @example
 * \@Injectable()
 * class AtProtoConfig implements AtProtoOptionsFactory {
 *   constructor(private readonly config: ConfigService) {}
 *   createAtProtoOptions(): AtProtoModuleOptions {
 *     return { publicUrl: this.config.getOrThrow('PUBLIC_URL'), ... };
 *   }
 * }
 * @publicApi
 */
export interface AtProtoOptionsFactory {
  createAtProtoOptions(): AtProtoModuleOptions | Promise<AtProtoModuleOptions>;
}
