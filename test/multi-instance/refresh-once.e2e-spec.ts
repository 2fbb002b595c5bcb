/**
 * Many app instances, one session: 4 instances of the sample app (separate OS processes,
 * https, one PostgreSQL database, one Redis) and a PDS in its own process, which counts the
 * token requests it receives. The PDS holds every token request for a while (1.5 s, inside
 * its own process) so that concurrent refreshes always overlap there: the outcome does not
 * depend on timing luck. The same 4 instances without Redis (per-process lock) are the
 * control, which must show the failures the distributed lock prevents.
 */
import { OwnRedis } from '../support/redis-server.js';
import {
  Cluster,
  describeRequests,
  refreshAttempts,
  statusCounts,
  type ApiResult,
} from './support/cluster.js';

const TOKEN_DELAY_MS = 1500;
const BURST = 250;

let redis: OwnRedis;
let cluster: Cluster;
let did: string;

beforeAll(async () => {
  [redis, cluster] = await Promise.all([
    OwnRedis.start(),
    Cluster.start({ label: 'mi_refresh', instances: 4 }),
  ]);
  did = cluster.account.did;
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  await redis?.stop();
}, 60_000);

/** One request per instance while the token is fresh: each gets the PDS's DPoP nonce. */
async function warmUp(cookie: string): Promise<void> {
  for (const instance of cluster.instances) {
    const res = await cluster.session(instance, cookie);
    if (res.status !== 200) throw new Error(`warm-up on ${instance.index}: ${res.status}`);
  }
}

function expectAllOk(results: ApiResult[]): void {
  expect(statusCounts(results)).toEqual({ 200: results.length });
  for (const r of results) expect(r.body).toEqual({ did, handle: cluster.account.handle });
}

describe('4 instances with Redis (distributed session lock)', () => {
  let cookie: string;

  beforeAll(async () => {
    await cluster.startInstances({ REDIS_URL: redis.url, NO_COLOR: '1' });
    cookie = await cluster.login();
    await warmUp(cookie);
  }, 120_000);

  afterEach(async () => {
    await cluster.pds.setTokenDelay(0);
  });

  it(`${BURST} concurrent requests on a just-expired session: exactly one refresh reaches the PDS`, async () => {
    await cluster.pds.reset();
    await cluster.pds.setTokenDelay(TOKEN_DELAY_MS);
    const before = await cluster.storedRefreshToken(did);
    await cluster.expireAccessToken(did);

    const results = await cluster.burst(BURST, cookie);

    expectAllOk(results);
    const requests = await cluster.pds.tokenRequests();
    const attempts = refreshAttempts(requests);
    expect({ attempts: attempts.length, log: describeRequests(requests) }).toEqual({
      attempts: 1,
      log: expect.any(String),
    });
    expect(attempts[0]).toMatchObject({ status: 200, presentedRefreshToken: before });
    // The stored refresh token is the newest one: the one the PDS issued, which is the
    // PDS's current token of the (only) grant.
    const stored = await cluster.storedRefreshToken(did);
    expect(stored).toBe(attempts[0]!.issuedRefreshToken);
    const grants = await cluster.pds.grants(did);
    expect(grants).toHaveLength(1);
    expect(grants[0]!.currentRefreshToken).toBe(stored);
  });

  it('forced refreshes on every instance at once are serialized: N refreshes, each with the then-current token', async () => {
    const perInstance = 2;
    const n = cluster.instances.length * perInstance;
    await cluster.pds.reset();
    await cluster.pds.setTokenDelay(TOKEN_DELAY_MS);
    const before = await cluster.storedRefreshToken(did);

    const results = await Promise.all(
      cluster.instances.flatMap((instance) =>
        Array.from({ length: perInstance }, () => cluster.forceRefresh(instance, cookie)),
      ),
    );

    expectAllOk(results);
    const requests = await cluster.pds.tokenRequests();
    const attempts = refreshAttempts(requests);
    const log = describeRequests(requests);
    expect({ attempts: attempts.length, log }).toEqual({ attempts: n, log: expect.any(String) });
    // No invalid_grant, no replay: every refresh succeeded and presented the token the one
    // before it had been issued (only possible if each waited for the previous one to be
    // stored), starting from the stored one.
    expect(attempts.filter((a) => a.status !== 200)).toEqual([]);
    expect(attempts[0]!.presentedRefreshToken).toBe(before);
    for (let i = 1; i < n; i++) {
      expect(attempts[i]!.presentedRefreshToken).toBe(attempts[i - 1]!.issuedRefreshToken);
    }
    expect(new Set(attempts.map((a) => a.presentedRefreshToken)).size).toBe(n);
    const stored = await cluster.storedRefreshToken(did);
    expect(stored).toBe(attempts[n - 1]!.issuedRefreshToken);
    const [grant, ...others] = await cluster.pds.grants(did);
    expect(others).toEqual([]);
    expect(grant!.currentRefreshToken).toBe(stored);
    expect(grant!.usedRefreshTokens).toEqual(
      expect.arrayContaining(attempts.map((a) => a.presentedRefreshToken)),
    );

    // The session is still valid everywhere, with no further refresh.
    await cluster.pds.reset();
    expectAllOk(await cluster.burst(cluster.instances.length * 2, cookie));
    expect(refreshAttempts(await cluster.pds.tokenRequests())).toEqual([]);
  });
});

describe('control: the same 4 instances without Redis (per-process lock)', () => {
  beforeAll(async () => {
    await cluster.startInstances({ NO_COLOR: '1' });
  }, 120_000);

  afterEach(async () => {
    await cluster.pds.setTokenDelay(0);
  });

  it(`${BURST} concurrent requests on a just-expired session: several refreshes with one token, all but one refused`, async () => {
    const cookie = await cluster.login();
    await warmUp(cookie);
    await cluster.pds.reset();
    await cluster.pds.setTokenDelay(TOKEN_DELAY_MS);
    await cluster.expireAccessToken(did);

    const results = await cluster.burst(BURST, cookie);

    const requests = await cluster.pds.tokenRequests();
    const attempts = refreshAttempts(requests);
    const log = describeRequests(requests);
    // Each process refreshes on its own, with the same refresh token: the PDS accepts one
    // and refuses the others, as a replay (invalid_grant, which revokes the whole grant:
    // the user is logged out) or, when they race inside the PDS, with a 500.
    expect({ moreThanOne: attempts.length > 1, log }).toEqual({ moreThanOne: true, log });
    expect(attempts.some((a) => a.status !== 200)).toBe(true);
    expect(results.some((r) => r.status !== 200)).toBe(true);
    const after = await cluster.session(cluster.instances[0]!, cookie);
    const grants = await cluster.pds.grants(did);
    console.log(
      `[multi-instance] control burst: PDS log ${log}; answers ${JSON.stringify(statusCounts(results))}; ` +
        `then ${after.status}, ${grants.length} grant(s) left at the PDS`,
    );
  });

  it('forced refreshes on every instance at once: several refreshes with one token, all but one refused', async () => {
    const cookie = await cluster.login();
    await warmUp(cookie);
    await cluster.pds.reset();
    await cluster.pds.setTokenDelay(TOKEN_DELAY_MS);

    const results = await Promise.all(
      cluster.instances.map((instance) => cluster.forceRefresh(instance, cookie)),
    );

    const requests = await cluster.pds.tokenRequests();
    const attempts = refreshAttempts(requests);
    const log = describeRequests(requests);
    expect({ moreThanOne: attempts.length > 1, log }).toEqual({ moreThanOne: true, log });
    expect(attempts.some((a) => a.status !== 200)).toBe(true);
    expect(results.some((r) => r.status !== 200)).toBe(true);
    const after = await cluster.session(cluster.instances[1]!, cookie);
    const grants = await cluster.pds.grants(did);
    console.log(
      `[multi-instance] control forced: PDS log ${log}; answers ${JSON.stringify(statusCounts(results))}; ` +
        `then ${after.status}, ${grants.length} grant(s) left at the PDS`,
    );
  });
});
