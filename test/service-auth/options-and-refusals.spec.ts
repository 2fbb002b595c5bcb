/**
 * The serviceAuth options, validated at boot with the others, and the mapping of the PDS's
 * getServiceAuth refusals (its messages, as @atproto/pds 0.5 words them) to stable reasons.
 */
import { AtProtoConfigError, resolveAtProtoOptions } from 'nestjs-atproto-auth';
import { serviceAuthRefusal } from '../../lib/service-auth/service-auth-refusal.js';
import { randomKey } from '../support/key-ring.js';

const base = {
  publicUrl: 'http://127.0.0.1:3000',
  encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
};

async function problems(serviceAuth: unknown): Promise<string[]> {
  try {
    await resolveAtProtoOptions({ ...base, serviceAuth } as never);
    return [];
  } catch (error) {
    expect(error).toBeInstanceOf(AtProtoConfigError);
    return [...(error as AtProtoConfigError).problems];
  }
}

describe('serviceAuth options', () => {
  it('default to a 10 s margin, a 50 s fallback and a sweep every minute', async () => {
    const resolved = await resolveAtProtoOptions(base);
    expect(resolved.serviceAuth).toMatchObject({
      marginMs: 10_000,
      fallbackTtlMs: 50_000,
      sweepIntervalMs: 60_000,
    });
    const set = await resolveAtProtoOptions({
      ...base,
      serviceAuth: { margin: 0, fallbackTtl: 20_000, sweepInterval: 5_000 },
    });
    expect(set.serviceAuth).toMatchObject({
      marginMs: 0,
      fallbackTtlMs: 20_000,
      sweepIntervalMs: 5_000,
    });
  });

  it('inbound: no audience, a 1 h maxAge, a 5 s clock skew, jtis in memory without redis, 10,000 verified tokens', async () => {
    const resolved = await resolveAtProtoOptions(base);
    expect(resolved.serviceAuth).toMatchObject({
      serviceDids: [],
      maxAgeMs: 3_600_000,
      clockSkewMs: 5_000,
      replayStore: 'memory',
      verifiedCacheMaxEntries: 10_000,
    });
    const off = await resolveAtProtoOptions({
      ...base,
      serviceAuth: { verifiedCacheMaxEntries: 0 },
    });
    expect(off.serviceAuth.verifiedCacheMaxEntries).toBe(0);
  });

  it('inbound: serviceDid and serviceDids together, once each; jtis in Redis with redis', async () => {
    const resolved = await resolveAtProtoOptions({
      ...base,
      redis: 'redis://127.0.0.1:6379',
      serviceAuth: {
        serviceDid: 'did:web:api.example.com',
        serviceDids: ['did:web:api.example.com', 'did:plc:abcdefghijklmnopqrstuvwx#bsky_fg'],
        maxAge: 60_000,
        clockSkew: 0,
      },
    });
    expect(resolved.serviceAuth).toMatchObject({
      serviceDids: ['did:web:api.example.com', 'did:plc:abcdefghijklmnopqrstuvwx#bsky_fg'],
      maxAgeMs: 60_000,
      clockSkewMs: 0,
      replayStore: 'redis',
    });
    const memory = await resolveAtProtoOptions({
      ...base,
      redis: 'redis://127.0.0.1:6379',
      serviceAuth: { replayStore: 'memory' },
    });
    expect(memory.serviceAuth.replayStore).toBe('memory');
  });

  it.each([
    [{ margin: -1 }, 'serviceAuth.margin must be >= 0'],
    [{ margin: 3_600_000 }, 'serviceAuth.margin must be below 3600000 ms'],
    [{ margin: 1.5 }, 'serviceAuth.margin must be a whole number'],
    [{ fallbackTtl: 0 }, 'serviceAuth.fallbackTtl must be positive'],
    [{ fallbackTtl: 3_600_001 }, 'serviceAuth.fallbackTtl must be at most'],
    [{ sweepInterval: 10 }, 'serviceAuth.sweepInterval must be at least 1000 ms'],
    [{ margn: 5 }, 'serviceAuth: unknown option "margn"'],
    [{ serviceDid: 'api.example.com' }, 'serviceAuth.serviceDid must be a DID'],
    [{ serviceDid: 'did:web:api.example.com#' }, 'serviceAuth.serviceDid must be a DID'],
    [{ serviceDids: 'did:web:api.example.com' }, 'serviceAuth.serviceDids must be an array'],
    [{ serviceDids: ['https://api.example.com'] }, 'serviceAuth.serviceDids must hold DIDs'],
    [{ maxAge: 3_600_001 }, 'serviceAuth.maxAge must be at most 3600000 ms'],
    [{ maxAge: 10 }, 'serviceAuth.maxAge must be at least 1000 ms'],
    [{ clockSkew: -1 }, 'serviceAuth.clockSkew must be >= 0'],
    [{ clockSkew: 600_000 }, 'serviceAuth.clockSkew must be at most 300000 ms'],
    [{ replayStore: 'disk' }, "serviceAuth.replayStore must be 'redis' or 'memory'"],
    [{ verifiedCacheMaxEntries: -1 }, 'serviceAuth.verifiedCacheMaxEntries must be >= 0'],
    [{ verifiedCacheMaxEntries: 2.5 }, 'serviceAuth.verifiedCacheMaxEntries must be a whole'],
    [
      { verifiedCacheMaxEntries: 1_000_001 },
      'serviceAuth.verifiedCacheMaxEntries must be at most 1000000',
    ],
    [{ verifiedCacheMaxEntries: '10' }, 'serviceAuth.verifiedCacheMaxEntries must be a number'],
    [{ replayStore: 'redis' }, "serviceAuth.replayStore: 'redis' needs the redis option"],
    [{ didDocument: { services: [] } }, 'serviceAuth.didDocument.services must name at least one'],
    [
      { didDocument: { services: [{ id: '#bsky_fg', type: 'BskyFeedGenerator' }] } },
      'serviceAuth.didDocument.services[].id must be',
    ],
    [
      {
        didDocument: { services: [{ id: 'bsky_fg', type: 'BskyFeedGenerator', endpoint: 'feed' }] },
      },
      'serviceAuth.didDocument.services[].endpoint must be an http(s) URL',
    ],
    [
      { didDocument: { services: [{ id: 'bsky_fg', type: 'BskyFeedGenerator' }] } },
      'serviceAuth.didDocument is served by this host, for did:web:127.0.0.1%3A3000',
    ],
    ['10s', 'serviceAuth must be an object'],
  ])('refuses %j at boot', async (serviceAuth, message) => {
    const found = await problems(serviceAuth);
    expect(found.join('\n')).toContain(message);
  });

  it('reports its problems with every other one', async () => {
    try {
      await resolveAtProtoOptions({ ...base, stateTtl: -1, serviceAuth: { margin: -1 } } as never);
      throw new Error('not refused');
    } catch (error) {
      const lines = (error as AtProtoConfigError).problems.join('\n');
      expect(lines).toContain('stateTtl');
      expect(lines).toContain('serviceAuth.margin');
    }
  });
});

describe('serviceAuthRefusal', () => {
  const request = { aud: 'did:web:feed.example.com', lxm: 'app.bsky.feed.getFeedSkeleton' };
  const invalid = (message: string, error = 'InvalidRequest') => ({ error, message });

  it.each([
    [
      400,
      invalid(
        'cannot request a token with an expiration more than an hour in the future',
        'BadExpiration',
      ),
      'expiration-too-far',
    ],
    [
      400,
      invalid(
        'cannot request a method-less token with an expiration more than a minute in the future',
        'BadExpiration',
      ),
      'methodless-expiration-too-far',
    ],
    [400, invalid('expiration is in past', 'BadExpiration'), 'expiration-in-past'],
    [
      400,
      invalid(
        'cannot request a service auth token for the following protected method: com.atproto.server.createAppPassword',
      ),
      'protected-method',
    ],
    [
      400,
      invalid(
        'insufficient access to request a service auth token for the following method: chat.bsky.convo.getLog',
      ),
      'privileged-method',
    ],
    [
      403,
      { error: 'ScopeMissingError', message: 'Missing required scope "rpc:x?aud=y"' },
      'scope-not-granted',
    ],
    [400, invalid('Bad token scope', 'InvalidToken'), 'refused'],
    [400, 'not json', 'refused'],
  ])('maps a %i %j to %s', (status, body, reason) => {
    const error = serviceAuthRefusal(status, body, request);
    expect(error.reason).toBe(reason);
    expect(error.code).toBe('ERR_AT_PROTO_SERVICE_AUTH');
    expect(error.status).toBe(status);
  });

  it('quotes an unknown refusal safely', () => {
    const error = serviceAuthRefusal(400, invalid('bad\nINFO forged line'), request);
    expect(error.message).toContain('bad\\u000aINFO forged line');
    expect(error.pdsError).toBe('InvalidRequest');
  });
});
