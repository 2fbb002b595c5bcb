/**
 * Failures around a refresh with 4 instances of the sample app (separate OS processes,
 * https, one PostgreSQL database, a Redis of the test's own) and the PDS in its own
 * process: Redis stopped, an instance killed while it holds the session lock, PostgreSQL
 * refusing writes. Only services of the test's own are stopped or locked.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pg from 'pg';
import { AtProtoOAuthSessionEntity } from 'nestjs-atproto-auth';
import { OwnRedis } from '../support/redis-server.js';
import {
  Cluster,
  describeRequests,
  refreshAttempts,
  statusCounts,
  waitFor,
  type ApiResult,
  type AppInstance,
} from './support/cluster.js';

/** PostgreSQL's lock_timeout on every connection of the instances (see the write test). */
const LOCK_TIMEOUT_MS = 1000;
/** The session lock's TTL (RedlockRequestLock's default). */
const LOCK_TTL_MS = 10_000;

let redis: OwnRedis;
let cluster: Cluster;
let did: string;
let cookie: string;

beforeAll(async () => {
  [redis, cluster] = await Promise.all([
    OwnRedis.start(),
    Cluster.start({ label: 'mi_faults', instances: 4 }),
  ]);
  did = cluster.account.did;
  await cluster.startInstances({
    REDIS_URL: redis.url,
    // node-postgres reads PGOPTIONS: a write blocked by a table lock fails after 1 s
    // (55P03 lock_not_available), which the stores retry as transient.
    PGOPTIONS: `-c lock_timeout=${LOCK_TIMEOUT_MS}`,
    NO_COLOR: '1',
  });
  cookie = await cluster.login();
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  await redis?.stop();
}, 60_000);

beforeEach(async () => {
  // Every instance calls the PDS once while the token is fresh (no refresh): each then holds
  // a current DPoP nonce, so that a refresh is one request, not a nonce challenge first.
  for (const instance of cluster.instances) {
    if (!instance.running) await instance.start(cluster.http);
    // (503 while its lock connection is still reconnecting after a Redis restart.)
    await waitFor(`warm-up on instance ${instance.index}`, async () => {
      const res = await cluster.session(instance, cookie);
      if (res.status === 200) return true;
      if (res.status !== 503) throw new Error(`warm-up on ${instance.index}: ${res.status}`);
      await sleep(200);
      return undefined;
    });
  }
  await cluster.pds.reset();
}, 120_000);

afterEach(async () => {
  await cluster.pds.setTokenDelay(0);
  await cluster.pds.setTokenResponseDelay(0);
});

const others = (): AppInstance[] => cluster.instances.slice(1);

function burstOn(instances: AppInstance[], count: number): Promise<ApiResult[]> {
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      cluster.session(instances[i % instances.length]!, cookie),
    ),
  );
}

describe('Redis stopped (the Redis the instances use for the session lock)', () => {
  // OwnRedis.restart() on a running server would leave the first one orphaned: track it.
  let down = false;
  const bringBack = async (): Promise<void> => {
    if (!down) return;
    await redis.restart();
    down = false;
  };
  beforeEach(async () => {
    await redis.stop();
    down = true;
  });
  afterEach(bringBack);

  it('requests that need no OAuth session (@AtProtoDid) keep working', async () => {
    const pages = await Promise.all(
      cluster.instances.flatMap((instance) =>
        Array.from({ length: 5 }, () => cluster.call(instance, 'GET', '/', { cookie })),
      ),
    );
    expect(statusCounts(pages)).toEqual({ 200: pages.length });
    for (const page of pages)
      expect(String(page.body)).toContain(`Signed in as <code>${did}</code>`);
  });

  // The session's own XRPC calls read their tokens with 'auto' (fetchHandler): the module
  // reads a fresh token without the Redis lock there too, so they keep working.
  it('a fresh session can still call the PDS as the user (needs no refresh, so no Redis)', async () => {
    const fresh = await cluster.burst(40, cookie);
    expect(statusCounts(fresh)).toEqual({ 200: 40 });
  });

  it('a restore that needs a refresh answers 503 and keeps the session; once Redis is back, one refresh and success', async () => {
    const before = await cluster.storedRefreshToken(did);
    await cluster.expireAccessToken(did);
    const stale = await cluster.burst(40, cookie);
    const forced = await Promise.all(cluster.instances.map((i) => cluster.forceRefresh(i, cookie)));
    expect(statusCounts([...stale, ...forced])).toEqual({ 503: 44 });
    // Nothing was refreshed and nothing deleted: the session is intact, here and at the PDS.
    expect(refreshAttempts(await cluster.pds.tokenRequests())).toEqual([]);
    expect(await cluster.storedRefreshToken(did)).toBe(before);
    expect((await cluster.pds.grants(did))[0]?.currentRefreshToken).toBe(before);

    await bringBack();
    // Each instance reconnects on its own (within ~2 s); until then it answers 503 without
    // refreshing. The first one back refreshes, once; the others then find a fresh token.
    const answers: ApiResult[] = [];
    for (const instance of cluster.instances) {
      answers.push(
        await waitFor(`instance ${instance.index} to answer 200`, async () => {
          const res = await cluster.session(instance, cookie);
          if (res.status === 200) return res;
          if (res.status !== 503) {
            throw new Error(`unexpected ${res.status} ${JSON.stringify(res.body)}`);
          }
          await sleep(200);
          return undefined;
        }),
      );
    }
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    const requests = await cluster.pds.tokenRequests();
    const attempts = refreshAttempts(requests);
    expect({ attempts: attempts.length, log: describeRequests(requests) }).toEqual({
      attempts: 1,
      log: expect.any(String),
    });
    expect(attempts[0]).toMatchObject({ status: 200, presentedRefreshToken: before });
    expect(await cluster.storedRefreshToken(did)).toBe(attempts[0]!.issuedRefreshToken);
  });
});

it('PostgreSQL refusing writes for a few seconds during a refresh: the retried write stores the new tokens, the user stays signed in', async () => {
  const table = cluster.dataSource.getMetadata(AtProtoOAuthSessionEntity).tableName;
  const locker = new pg.Client({ connectionString: cluster.databaseUrl });
  await locker.connect();
  try {
    const before = await cluster.storedRefreshToken(did);
    await cluster.expireAccessToken(did);
    // Reads still work (ACCESS SHARE), every write to the sessions table waits.
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE "${table}" IN EXCLUSIVE MODE`);
    const pending = cluster.session(cluster.instances[1]!, cookie);

    // The PDS has rotated the refresh token...
    const [refreshed] = await waitFor('the refresh at the PDS', async () => {
      const done = refreshAttempts(await cluster.pds.tokenRequests()).filter((r) => r.status);
      return done.length ? done : undefined;
    });
    expect(refreshed).toMatchObject({ status: 200, presentedRefreshToken: before });
    // ...and the instance's write of the new tokens is waiting for the table lock.
    await waitFor('a write waiting for the table lock', async () => {
      const { rows } = await locker.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
          WHERE c.relname = $1 AND NOT l.granted`,
        [table],
      );
      return rows[0]!.n > 0 ? true : undefined;
    });
    // Refuse writes for well over lock_timeout after the write started waiting: its first
    // attempt is cancelled (55P03) and the store retries it.
    await sleep(2.5 * LOCK_TIMEOUT_MS);
    expect(await cluster.storedRefreshToken(did)).toBe(before);
    await locker.query('COMMIT');

    const answer = await pending;
    expect(answer.status).toBe(200);
    const stored = await cluster.storedRefreshToken(did);
    expect(stored).toBe(refreshed!.issuedRefreshToken);
    expect((await cluster.pds.grants(did))[0]?.currentRefreshToken).toBe(stored);
    // A session whose tokens cannot be stored is revoked by the OAuth client: not here.
    expect(await cluster.pds.revokeRequests()).toEqual([]);
    const after = await cluster.burst(8, cookie);
    expect(statusCounts(after)).toEqual({ 200: 8 });
    expect(refreshAttempts(await cluster.pds.tokenRequests())).toHaveLength(1);
  } finally {
    await locker.query('ROLLBACK').catch(() => undefined);
    await locker.end();
  }
});

describe('an instance killed (SIGKILL) while it holds the session lock, its token request in flight', () => {
  let lockRedis: Redis;
  const lockKey = () => `atproto:lock:@atproto-oauth-client-${did}`;

  beforeAll(() => {
    lockRedis = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    lockRedis?.disconnect();
  });

  /**
   * Starts a refresh on instance 0, waits until the PDS shows its token request in the
   * state `ready` describes, then SIGKILLs instance 0; returns when it was killed.
   */
  async function killDuringRefresh(
    ready: (r: { answeredStatus?: number; status?: number }) => boolean,
  ): Promise<number> {
    const victim = cluster.instances[0]!;
    const doomed = cluster.session(victim, cookie).catch(() => undefined);
    await waitFor("the victim's token request at the PDS", async () => {
      const requests = await cluster.pds.tokenRequests();
      return requests.some((r) => r.grantType === 'refresh_token' && r.dpopNonce && ready(r))
        ? true
        : undefined;
    });
    await victim.kill('SIGKILL');
    const killedAt = Date.now();
    await doomed;
    // The dead process's lock is still in Redis, to expire on its own.
    expect(await lockRedis.pttl(lockKey())).toBeGreaterThan(0);
    return killedAt;
  }

  it('before the PDS handled the request: nobody refreshes until the lock expires, then exactly one instance refreshes with the same token, the session survives', async () => {
    const before = await cluster.storedRefreshToken(did);
    const usedBefore = (await cluster.pds.grants(did))[0]!.usedRefreshTokens;
    await cluster.expireAccessToken(did);
    // The PDS holds the request (in front of its handler) past the kill: it never handles
    // it for a client that is gone (the body cannot be read any more; it answers 500 to
    // nobody), so the refresh token is not consumed.
    await cluster.pds.setTokenDelay(4000);
    const killedAt = await killDuringRefresh((r) => r.answeredStatus === undefined);
    await cluster.pds.setTokenDelay(0);

    const results = await burstOn(others(), 30);

    expect(statusCounts(results)).toEqual({ 200: 30 });
    const requests = await cluster.pds.tokenRequests();
    const log = describeRequests(requests);
    const attempts = refreshAttempts(requests);
    const afterKill = attempts.filter((a) => a.at > killedAt);
    const beforeKill = attempts.filter((a) => a.at <= killedAt);
    expect({ afterKill: afterKill.length, log }).toEqual({ afterKill: 1, log });
    // The victim's request was never answered with tokens.
    for (const a of beforeKill) expect(a).toMatchObject({ presentedRefreshToken: before });
    expect(beforeKill.filter((a) => a.issuedRefreshToken !== undefined)).toEqual([]);
    // One refresh, after the dead holder's lock expired, with the token it had presented.
    expect(afterKill[0]).toMatchObject({ status: 200, presentedRefreshToken: before });
    expect(afterKill[0]!.at - killedAt).toBeGreaterThanOrEqual(LOCK_TTL_MS / 2);
    const stored = await cluster.storedRefreshToken(did);
    expect(stored).toBe(afterKill[0]!.issuedRefreshToken);
    const grants = await cluster.pds.grants(did);
    expect(grants.map((g) => g.currentRefreshToken)).toEqual([stored]);
    expect(grants[0]!.usedRefreshTokens.sort()).toEqual([...usedBefore, before].sort());
  });

  it('after the PDS rotated the token but before the victim stored it: exactly one refresh after the lock expires, which the PDS refuses as a replay and answers by revoking the grant; the user is cleanly logged out (measured PDS behaviour)', async () => {
    const before = await cluster.storedRefreshToken(did);
    await cluster.expireAccessToken(did);
    // The PDS handles the request (rotating the refresh token) and holds its answer.
    await cluster.pds.setTokenResponseDelay(4000);
    const killedAt = await killDuringRefresh((r) => r.answeredStatus === 200 && !r.status);
    await cluster.pds.setTokenResponseDelay(0);

    const results = await burstOn(others(), 30);

    // Every request ends in a clean 401 (log in again); no 5xx.
    expect(statusCounts(results)).toEqual({ 401: 30 });
    const requests = await cluster.pds.tokenRequests();
    const log = describeRequests(requests);
    const attempts = refreshAttempts(requests);
    const rotated = attempts.filter((a) => a.at <= killedAt && a.answeredStatus === 200);
    const afterKill = attempts.filter((a) => a.at > killedAt);
    expect({ rotated: rotated.length, afterKill: afterKill.length, log }).toEqual({
      rotated: 1,
      afterKill: 1,
      log,
    });
    expect(rotated[0]!.presentedRefreshToken).toBe(before);
    // The next holder presents the stored (old, already used) token after the TTL: the PDS
    // has no grace period for it.
    expect(afterKill[0]).toMatchObject({
      status: 400,
      error: 'invalid_grant',
      errorDescription: 'Refresh token replayed',
      presentedRefreshToken: before,
    });
    expect(afterKill[0]!.at - killedAt).toBeGreaterThanOrEqual(LOCK_TTL_MS / 2);
    // The replay revoked the whole grant, the token issued to the dead process included;
    // the instances deleted the session.
    expect(await cluster.pds.grants(did)).toEqual([]);
    expect(await cluster.storedRefreshToken(did)).toBeUndefined();
    expect((await cluster.session(cluster.instances[2]!, cookie)).status).toBe(401);
  });
});
