import { z } from 'zod';

/**
 * Options of service-auth tokens (see docs/service-auth.md), milliseconds: outbound, the
 * JWTs a user's PDS signs for another service (`margin`, `fallbackTtl`, `sweepInterval`);
 * inbound, the tokens other services send to this backend's `@AtProtoServiceAuth()` routes
 * (`serviceDid`, `serviceDids`, `maxAge`, `clockSkew`, `replayStore`,
 * `verifiedCacheMaxEntries`).
 * @publicApi
 */
export interface AtProtoServiceAuthOptions {
  /**
   * A cached token is handed out only while it stays valid at least this long: time for the
   * request that carries it to reach the audience, and for clocks that disagree a little.
   * Below 1 h (the longest token a PDS issues). @default 10000
   */
  margin?: number;
  /**
   * How long a token is cached when its expiry cannot be read from it (a warning is
   * logged): below the 60 s a PDS gives a token by default. At most 1 h. @default 50000
   */
  fallbackTtl?: number;
  /** How often expired tokens are dropped from the in-process cache. @default 60000 */
  sweepInterval?: number;
  /**
   * This backend's DID as an audience of inbound tokens (`did:web:api.example.com`), or one
   * of its services (`did:web:api.example.com#bsky_fg`). A bare DID also accepts tokens for
   * any `#service` of it; a DID with a fragment accepts exactly that. Needed by
   * `@AtProtoServiceAuth()` routes (with or instead of `serviceDids`).
   */
  serviceDid?: string;
  /** More audiences this backend answers to (several DIDs, or several services of one). */
  serviceDids?: string[];
  /**
   * Inbound tokens whose `exp` is further ahead than this are refused: a PDS issues at most
   * 1 h. At most 1 h. @default 3600000
   */
  maxAge?: number;
  /**
   * How far an inbound token's `iat` may be in the future, for clocks that disagree a little.
   * At most 300000 (5 min). @default 5000
   */
  clockSkew?: number;
  /**
   * Where `singleUse` routes remember the `jti` of the tokens they accepted: in `redis`
   * (every instance sees every token; needs the `redis` option) or in `memory` (this
   * instance only). @default 'redis' when `redis` is set, else 'memory'
   */
  replayStore?: 'redis' | 'memory';
  /**
   * How many inbound tokens whose signature has been verified are remembered (in this
   * process, by the SHA-256 of the token), so that a caller that sends the same token again
   * (a PDS's token lives 60 s, and callers reuse it) is not verified again: no signature
   * check, no DID document lookup, every other check (`exp`, `maxAge`, `iat`, the route's
   * `aud` and `lxm`, the `jti` of `singleUse` routes) on every request. An entry lives until
   * the token's `exp`, the least recently used dropped first beyond this count. A token
   * verified once stays accepted until its `exp` even if its issuer's key is rotated
   * meanwhile, as with any verifier. About 0.4 kB of heap per entry (4 MB for 10,000), as
   * measured. 0 turns the cache off; at most 1000000. @default 10000
   */
  verifiedCacheMaxEntries?: number;
  /**
   * Serve `/.well-known/did.json` at the host root (outside `routePrefix` and any global
   * prefix) for a `did:web` service: the DID document that `atproto-proxy` and the AppView
   * read to find this service's endpoint. Needs `serviceDid` to be `did:web:<publicUrl's
   * host>`. No verification method is published: this module does not sign tokens itself.
   */
  didDocument?: {
    /** The service entries (`#<id>`), e.g. `{ id: 'bsky_fg', type: 'BskyFeedGenerator' }`. */
    services: AtProtoDidDocumentService[];
  };
}

/**
 * A `service` entry of the DID document served with `serviceAuth.didDocument`.
 * @publicApi
 */
export interface AtProtoDidDocumentService {
  /** Its id without `#`, e.g. `bsky_fg`, `atproto_labeler`, `bsky_notif`. */
  id: string;
  /** Its type, e.g. `BskyFeedGenerator`, `AtprotoLabeler`. */
  type: string;
  /** Its endpoint (an https origin). @default the origin of publicUrl */
  endpoint?: string;
}

/**
 * The service-auth options after validation.
 * @internal
 */
export interface ResolvedServiceAuthOptions {
  readonly marginMs: number;
  readonly fallbackTtlMs: number;
  readonly sweepIntervalMs: number;
  /** `serviceDid` and `serviceDids` together; empty when inbound tokens are not configured. */
  readonly serviceDids: readonly string[];
  readonly maxAgeMs: number;
  readonly clockSkewMs: number;
  /** Where `jti`s are remembered: decided from `replayStore` and `redis`. */
  readonly replayStore: 'redis' | 'memory';
  /** Most verified inbound tokens remembered; 0: none. */
  readonly verifiedCacheMaxEntries: number;
  /** The DID document to serve at `/.well-known/did.json`, if asked for. */
  readonly didDocument: ServiceDidDocument | undefined;
}

/** The document served with `serviceAuth.didDocument`. @internal */
export interface ServiceDidDocument {
  readonly '@context': readonly string[];
  readonly id: string;
  readonly service: readonly { id: string; type: string; serviceEndpoint: string }[];
}

/** @internal */
export const SERVICE_AUTH_DEFAULTS: ResolvedServiceAuthOptions = {
  marginMs: 10_000,
  fallbackTtlMs: 50_000,
  sweepIntervalMs: 60_000,
  serviceDids: [],
  maxAgeMs: 3_600_000,
  clockSkewMs: 5_000,
  replayStore: 'memory',
  verifiedCacheMaxEntries: 10_000,
  didDocument: undefined,
};

/**
 * A DID, optionally with a `#service` fragment: the audiences this backend accepts. The
 * method is kept open (`did:plc`, `did:web`, others): it is the operator's own choice.
 * @internal
 */
export const SERVICE_DID = /^did:[a-z]+:[A-Za-z0-9._:%-]*[A-Za-z0-9._-](#[A-Za-z0-9._~:-]+)?$/;

const HOUR = 3_600_000;
const millis = (name: string) =>
  z
    .number({ error: `serviceAuth.${name} must be a number of milliseconds` })
    .int({ error: `serviceAuth.${name} must be a whole number of milliseconds` });

const schema = z
  .object({
    margin: millis('margin')
      .min(0, { error: 'serviceAuth.margin must be >= 0' })
      .max(HOUR - 1, {
        error:
          'serviceAuth.margin must be below 3600000 ms (1 h, the longest token a PDS issues): no token would ever be cached',
      })
      .optional(),
    fallbackTtl: millis('fallbackTtl')
      .min(1, { error: 'serviceAuth.fallbackTtl must be positive' })
      .max(HOUR, { error: 'serviceAuth.fallbackTtl must be at most 3600000 ms (1 h)' })
      .optional(),
    sweepInterval: millis('sweepInterval')
      .min(1000, { error: 'serviceAuth.sweepInterval must be at least 1000 ms' })
      .max(86_400_000, { error: 'serviceAuth.sweepInterval must be at most 86400000 ms (1 day)' })
      .optional(),
    serviceDid: z
      .string({ error: 'serviceAuth.serviceDid must be a DID such as did:web:api.example.com' })
      .max(2048, { error: 'serviceAuth.serviceDid is too long' })
      .regex(SERVICE_DID, {
        error:
          'serviceAuth.serviceDid must be a DID such as did:web:api.example.com, optionally with a #service fragment',
      })
      .optional(),
    serviceDids: z
      .array(
        z.string().max(2048).regex(SERVICE_DID, {
          error:
            'serviceAuth.serviceDids must hold DIDs such as did:web:api.example.com, optionally with a #service fragment',
        }),
        { error: 'serviceAuth.serviceDids must be an array of DIDs' },
      )
      .max(100, { error: 'serviceAuth.serviceDids holds at most 100 DIDs' })
      .optional(),
    maxAge: millis('maxAge')
      .min(1000, { error: 'serviceAuth.maxAge must be at least 1000 ms' })
      .max(HOUR, {
        error:
          'serviceAuth.maxAge must be at most 3600000 ms (1 h, the longest token a PDS issues)',
      })
      .optional(),
    clockSkew: millis('clockSkew')
      .min(0, { error: 'serviceAuth.clockSkew must be >= 0' })
      .max(300_000, { error: 'serviceAuth.clockSkew must be at most 300000 ms (5 min)' })
      .optional(),
    replayStore: z
      .enum(['redis', 'memory'], { error: "serviceAuth.replayStore must be 'redis' or 'memory'" })
      .optional(),
    verifiedCacheMaxEntries: z
      .number({ error: 'serviceAuth.verifiedCacheMaxEntries must be a number of entries' })
      .int({ error: 'serviceAuth.verifiedCacheMaxEntries must be a whole number' })
      .min(0, { error: 'serviceAuth.verifiedCacheMaxEntries must be >= 0 (0 turns it off)' })
      .max(1_000_000, { error: 'serviceAuth.verifiedCacheMaxEntries must be at most 1000000' })
      .optional(),
    didDocument: z
      .object(
        {
          services: z
            .array(
              z
                .object({
                  id: z.string().regex(/^[A-Za-z0-9._~-]{1,64}$/, {
                    error:
                      'serviceAuth.didDocument.services[].id must be 1-64 of A-Z a-z 0-9 . _ ~ - (no #)',
                  }),
                  type: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, {
                    error:
                      'serviceAuth.didDocument.services[].type must be a type name such as BskyFeedGenerator',
                  }),
                  endpoint: z
                    .string()
                    .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), {
                      error: 'serviceAuth.didDocument.services[].endpoint must be an http(s) URL',
                    })
                    .optional(),
                })
                .strict(),
              {
                error:
                  'serviceAuth.didDocument.services must be an array of { id, type, endpoint? }',
              },
            )
            .min(1, { error: 'serviceAuth.didDocument.services must name at least one service' }),
        },
        { error: 'serviceAuth.didDocument must be { services: [{ id, type, endpoint? }] }' },
      )
      .strict()
      .optional(),
  })
  // Unknown keys are refused: a misspelt option would otherwise be dropped silently.
  .strict();

/**
 * Validates `serviceAuth` and fills in the defaults. Pushes one line per problem onto
 * `problems`; the returned value is only meaningful when none was pushed.
 * @internal
 */
export function resolveServiceAuthOptions(
  raw: unknown,
  problems: string[],
  /** Whether the module's `redis` option is set (the default replay store follows it). */
  redis = false,
  /** `publicUrl`, for the DID document: its host names the did:web, its origin the endpoint. */
  publicUrl?: URL,
): ResolvedServiceAuthOptions {
  const defaults: ResolvedServiceAuthOptions = {
    ...SERVICE_AUTH_DEFAULTS,
    replayStore: redis ? 'redis' : 'memory',
  };
  if (raw === undefined) return defaults;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    problems.push(`serviceAuth must be an object: { ${KNOWN.join('?, ')}? }`);
    return defaults;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          problems.push(
            `serviceAuth: unknown option ${JSON.stringify(key)} (known: ${KNOWN.join(', ')})`,
          );
        }
      } else {
        problems.push(issue.message);
      }
    }
    return defaults;
  }
  const data = parsed.data;
  if (data.replayStore === 'redis' && !redis) {
    problems.push("serviceAuth.replayStore: 'redis' needs the redis option (a redis:// URL)");
  }
  const serviceDids = [
    ...new Set([...(data.serviceDid ? [data.serviceDid] : []), ...(data.serviceDids ?? [])]),
  ];
  return {
    marginMs: data.margin ?? defaults.marginMs,
    fallbackTtlMs: data.fallbackTtl ?? defaults.fallbackTtlMs,
    sweepIntervalMs: data.sweepInterval ?? defaults.sweepIntervalMs,
    serviceDids,
    maxAgeMs: data.maxAge ?? defaults.maxAgeMs,
    clockSkewMs: data.clockSkew ?? defaults.clockSkewMs,
    replayStore: data.replayStore ?? defaults.replayStore,
    verifiedCacheMaxEntries: data.verifiedCacheMaxEntries ?? defaults.verifiedCacheMaxEntries,
    didDocument:
      data.didDocument && didDocument(data.didDocument, serviceDids, publicUrl, problems),
  };
}

/**
 * The DID document of `did:web:<publicUrl's host>`, which must be one of the service's DIDs:
 * a did:web document is served by the host it names, so any other DID would be a document
 * nobody resolves here.
 */
function didDocument(
  input: { services: { id: string; type: string; endpoint?: string | undefined }[] },
  serviceDids: readonly string[],
  publicUrl: URL | undefined,
  problems: string[],
): ServiceDidDocument | undefined {
  if (!publicUrl) return undefined; // publicUrl's own problem is reported
  const did = `did:web:${publicUrl.host.replace(':', '%3A')}`;
  if (!serviceDids.includes(did)) {
    problems.push(
      `serviceAuth.didDocument is served by this host, for ${did}: set serviceAuth.serviceDid to it`,
    );
    return undefined;
  }
  const ids = input.services.map((s) => s.id);
  if (new Set(ids).size !== ids.length) {
    problems.push('serviceAuth.didDocument.services: each id once');
  }
  return {
    '@context': ['https://www.w3.org/ns/did/v1'],
    id: did,
    service: input.services.map((s) => ({
      id: `#${s.id}`,
      type: s.type,
      serviceEndpoint: s.endpoint ?? publicUrl.origin,
    })),
  };
}

const KNOWN = [
  'margin',
  'fallbackTtl',
  'sweepInterval',
  'serviceDid',
  'serviceDids',
  'maxAge',
  'clockSkew',
  'replayStore',
  'verifiedCacheMaxEntries',
  'didDocument',
];
