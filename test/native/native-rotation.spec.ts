/**
 * Refresh-token rotation with reuse detection on each database, with two app instances
 * (two DataSources on one database): the edges of the 30-second grace.
 */
import { jest } from '@jest/globals';
import type { ResolvedAtProtoOptions } from 'nestjs-atproto-auth';
import { AtProtoTokenError } from '../../lib/native/native-token.error.js';
import type { NativeTokenStore } from '../../lib/native/native-store.interface.js';
import { AtProtoNativeService, REFRESH_GRACE_MS } from '../../lib/native/native.service.js';
import { DIALECTS } from '../support/databases.js';
import { twoInstancesOn } from './support/data-sources.js';
import {
  claimsOf,
  fakeDateOnly,
  nativeInstance,
  nativeOptions,
  tokenPair,
  type NativeInstance,
} from './support/native-world.js';

describe.each(DIALECTS)('refresh rotation on %s, two instances', (dialect) => {
  let close: () => Promise<void>;
  let options: ResolvedAtProtoOptions;
  let a: NativeInstance;
  let b: NativeInstance;

  beforeAll(async () => {
    const dbs = await twoInstancesOn(dialect, 'native_rotation');
    close = dbs.close;
    ({ options } = await nativeOptions({ storage: 'typeorm' }));
    a = nativeInstance(options, dbs.first);
    b = nativeInstance(options, dbs.second);
  });
  afterAll(async () => {
    await close?.();
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  const refresh = (instance: NativeInstance, token: string) =>
    instance.service.token({ grant_type: 'refresh_token', refresh_token: token });

  async function refusedAsReuse(instance: NativeInstance, token: string): Promise<void> {
    const error = await refresh(instance, token).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoTokenError);
    expect((error as AtProtoTokenError).oauthError).toBe('invalid_grant');
    expect((error as AtProtoTokenError).message).toMatch(/already used/);
  }

  /** The family and its app session were ended: nothing of it works on either instance. */
  async function expectEnded(sid: string, tokens: string[]): Promise<void> {
    expect((await a.store.getFamily(sid))?.revokedAt).toBeInstanceOf(Date);
    expect((await b.appSessionStore.get(sid))?.revokedAt).toBeInstanceOf(Date);
    for (const token of tokens) {
      for (const instance of [a, b]) {
        await expect(refresh(instance, token)).rejects.toMatchObject({
          oauthError: 'invalid_grant',
        });
      }
    }
  }

  async function expectAlive(sid: string): Promise<void> {
    expect((await a.store.getFamily(sid))?.revokedAt).toBeNull();
    expect((await b.appSessionStore.get(sid))?.revokedAt).toBeNull();
  }

  it('1. previous token within the grace, successor unused: the same successor, family alive', async () => {
    const { tokens } = await tokenPair(a, options);
    const sid = claimsOf(tokens.access_token).sid as string;
    const first = await refresh(a, tokens.refresh_token);
    // The device did not get the answer and retries with the same token, here on the other
    // instance.
    const retry = await refresh(b, tokens.refresh_token);
    expect(retry.refresh_token).toBe(first.refresh_token);
    expect(retry.access_token).not.toBe(first.access_token);
    expect(await b.service.verifyAccessToken(retry.access_token)).toMatchObject({
      appSessionId: sid,
    });
    await expectAlive(sid);
    // The successor works as usual afterwards.
    const next = await refresh(b, first.refresh_token);
    expect(next.refresh_token).not.toBe(first.refresh_token);
    await expectAlive(sid);
  });

  it('2. previous token after the grace: the family and its app session are ended', async () => {
    const start = Date.now();
    fakeDateOnly(jest, start);
    const { tokens } = await tokenPair(a, options);
    const sid = claimsOf(tokens.access_token).sid as string;
    const first = await refresh(a, tokens.refresh_token);
    jest.setSystemTime(start + REFRESH_GRACE_MS);
    // Exactly at the end of the grace it still holds.
    expect((await refresh(b, tokens.refresh_token)).refresh_token).toBe(first.refresh_token);
    jest.setSystemTime(start + REFRESH_GRACE_MS + 1000);
    await refusedAsReuse(b, tokens.refresh_token);
    await expectEnded(sid, [first.refresh_token, tokens.refresh_token]);
  });

  it('3. previous token within the grace after the successor was used: ended', async () => {
    const { tokens } = await tokenPair(a, options);
    const sid = claimsOf(tokens.access_token).sid as string;
    const first = await refresh(a, tokens.refresh_token);
    const second = await refresh(a, first.refresh_token);
    await refusedAsReuse(b, tokens.refresh_token);
    await expectEnded(sid, [second.refresh_token, first.refresh_token]);
  });

  it('any older token, even within 30 seconds: ended', async () => {
    const { tokens } = await tokenPair(a, options);
    const sid = claimsOf(tokens.access_token).sid as string;
    const first = await refresh(a, tokens.refresh_token);
    const second = await refresh(b, first.refresh_token);
    const third = await refresh(a, second.refresh_token);
    await refusedAsReuse(b, first.refresh_token);
    await expectEnded(sid, [third.refresh_token]);
  });

  it('4. the same current token on two instances at once: one rotation, both get the same successor, no revocation', async () => {
    const { tokens } = await tokenPair(a, options);
    const sid = claimsOf(tokens.access_token).sid as string;
    let current = tokens.refresh_token;
    for (let round = 0; round < 8; round++) {
      const [x, y] = await Promise.all([refresh(a, current), refresh(b, current)]);
      expect(x.refresh_token).toBe(y.refresh_token);
      const family = await a.store.getFamily(sid);
      // One rotation: the presented token is the previous one, the successor the current.
      expect(family?.previousJti).toBe(claimsOf(current).jti);
      expect(family?.currentJti).toBe(claimsOf(x.refresh_token).jti);
      current = x.refresh_token;
    }
    await expectAlive(sid);
    expect((await refresh(b, current)).did).toBe(claimsOf(current).sub);
  });

  it('4b. a rotation lost between the read and the UPDATE is decided again: the same successor, no revocation', async () => {
    const { tokens } = await tokenPair(a, options);
    const sid = claimsOf(tokens.access_token).sid as string;
    // Instance B reads the family, then waits until A has rotated it: B's conditional UPDATE
    // then matches nothing, whatever the database's timing.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let readDone!: () => void;
    const read = new Promise<void>((resolve) => (readDone = resolve));
    const store = b.store;
    const slowStore: NativeTokenStore = {
      createCode: (r) => store.createCode(r),
      consumeCode: (...args) => store.consumeCode(...args),
      hasPendingCode: (...args) => store.hasPendingCode(...args),
      deleteExpiredCodes: (...args) => store.deleteExpiredCodes(...args),
      createFamily: (r) => store.createFamily(r),
      getFamily: async (id) => {
        const row = await store.getFamily(id);
        readDone();
        await gate;
        return row;
      },
      rotateFamily: (...args) => store.rotateFamily(...args),
      revokeFamily: (...args) => store.revokeFamily(...args),
      deleteEndedFamilies: (...args) => store.deleteEndedFamilies(...args),
    };
    const slowB = new AtProtoNativeService(options, b.appSessions, slowStore);
    const late = refresh({ ...b, service: slowB }, tokens.refresh_token);
    await read;
    const first = await refresh(a, tokens.refresh_token);
    release();
    expect((await late).refresh_token).toBe(first.refresh_token);
    await expectAlive(sid);
  });
});
