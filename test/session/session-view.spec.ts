/**
 * The one session view: the access token's expiry (isExpired, timeUntilExpiry,
 * needsRefresh) kept apart from the session's end (isEnded), for an OAuth session, a plain
 * shape another kind produces (a bot session), and app sessions as AppSessionService
 * returns them (idle end, absolute end, revocation).
 */
import {
  AppSessionService,
  appSessionView,
  AtProtoOAuthSessionView,
  AtProtoSessionView,
  MemoryAppSessionStore,
  type ResolvedAtProtoOptions,
} from 'nestjs-atproto-auth';

const T = 1_800_000_000_000;
const MIN = 60_000;
const DAY = 86_400_000;
const did = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa';

describe('AtProtoSessionView: the access token', () => {
  const view = new AtProtoSessionView({
    kind: 'bot',
    did,
    accessExpiresAt: new Date(T + 10 * MIN),
    endsAt: new Date(T + 60 * DAY),
  });

  it('expires at accessExpiresAt, and the session goes on (refreshable)', () => {
    expect(view.isExpired(T)).toBe(false);
    expect(view.isExpired(T + 10 * MIN - 1)).toBe(false);
    expect(view.isExpired(T + 10 * MIN)).toBe(true);
    expect(view.isExpired(new Date(T + 11 * MIN))).toBe(true);
    expect(view.isEnded(T + 11 * MIN)).toBe(false);
  });

  it('timeUntilExpiry counts down to 0, never below', () => {
    expect(view.timeUntilExpiry(T)).toBe(10 * MIN);
    expect(view.timeUntilExpiry(T + 10 * MIN)).toBe(0);
    expect(view.timeUntilExpiry(T + DAY)).toBe(0);
  });

  it('needsRefresh within the threshold of expiry, or after it, while the session lasts', () => {
    expect(view.needsRefresh(T, 5 * MIN)).toBe(false);
    expect(view.needsRefresh(T + 5 * MIN, 5 * MIN)).toBe(true);
    expect(view.needsRefresh(T + 20 * MIN, 0)).toBe(true);
    expect(view.needsRefresh(T + 60 * DAY, 5 * MIN)).toBe(false);
    expect(() => view.needsRefresh(T, -1)).toThrow(TypeError);
    expect(() => view.needsRefresh(T, Number.NaN)).toThrow(TypeError);
  });

  it('an unknown expiry is never expired nor due, and has no time until expiry', () => {
    const unknown = new AtProtoSessionView({
      kind: 'oauth',
      did,
      accessExpiresAt: null,
      endsAt: null,
    });
    expect(unknown.isExpired(T + 100 * DAY)).toBe(false);
    expect(unknown.timeUntilExpiry(T)).toBeUndefined();
    expect(unknown.needsRefresh(T, DAY)).toBe(false);
    expect(unknown.isEnded(T + 100 * DAY)).toBe(false);
  });

  it('the methods default to now', () => {
    const now = Date.now();
    const soon = new AtProtoSessionView({
      kind: 'oauth',
      did,
      accessExpiresAt: new Date(now + DAY),
      endsAt: new Date(now - 1),
    });
    expect(soon.isExpired()).toBe(false);
    expect(soon.isEnded()).toBe(true);
    expect(soon.timeUntilExpiry()).toBeGreaterThan(DAY - MIN);
  });

  it('an OAuth view ends with its retention', () => {
    const oauth = new AtProtoOAuthSessionView({
      did,
      issuer: 'https://auth.example.test',
      pdsUrl: 'https://pds.example.test',
      accessExpiresAt: new Date(T),
      expiresAt: new Date(T + 90 * DAY),
      updatedAt: new Date(T - 5 * MIN),
    });
    expect(oauth).toMatchObject({ kind: 'oauth', endsAt: new Date(T + 90 * DAY) });
    expect(oauth.isExpired(T)).toBe(true);
    expect(oauth.isEnded(T)).toBe(false);
    expect(oauth.isEnded(T + 90 * DAY)).toBe(true);
  });
});

describe('appSessionView', () => {
  const idleTtlMs = 2 * DAY;
  const absoluteTtlMs = 10 * DAY;
  const options = {
    appSession: { idleTtlMs, absoluteTtlMs, cacheTtlMs: 0, cacheMaxEntries: 10 },
  } as unknown as ResolvedAtProtoOptions;

  it('ends at the idle end while it comes first, then at the absolute end', () => {
    const base = { did, expiresAt: new Date(T + absoluteTtlMs) };
    const fresh = appSessionView({ ...base, lastSeenAt: new Date(T) }, options.appSession);
    expect(fresh).toMatchObject({ kind: 'app', did, accessExpiresAt: null });
    expect(fresh.endsAt).toEqual(new Date(T + idleTtlMs));
    expect(fresh.isEnded(T + idleTtlMs - 1)).toBe(false);
    expect(fresh.isEnded(T + idleTtlMs)).toBe(true);

    const late = appSessionView(
      { ...base, lastSeenAt: new Date(T + absoluteTtlMs - MIN) },
      options.appSession,
    );
    expect(late.endsAt).toEqual(base.expiresAt);
  });

  it('has no access token: never expired, never due, no time until expiry', () => {
    const view = appSessionView(
      { did, expiresAt: new Date(T + DAY), lastSeenAt: new Date(T) },
      options.appSession,
    );
    expect(view.isExpired(T + 100 * DAY)).toBe(false);
    expect(view.needsRefresh(T, DAY)).toBe(false);
    expect(view.timeUntilExpiry(T)).toBeUndefined();
  });

  it('refuses an idle timeout that is not a non-negative number', () => {
    const info = { did, expiresAt: new Date(T), lastSeenAt: new Date(T) };
    expect(() => appSessionView(info, { idleTtlMs: -1 })).toThrow(TypeError);
    expect(() => appSessionView(info, {} as { idleTtlMs: number })).toThrow(TypeError);
  });

  it("from AppSessionService: an active session's view, and a revoked record ended at its revocation", async () => {
    const store = new MemoryAppSessionStore();
    const sessions = new AppSessionService(options, store);
    const { token, session } = await sessions.create(did, 'test');
    const info = await sessions.validate(token);
    const view = appSessionView(info!, options.appSession);
    expect(view.isEnded()).toBe(false);
    expect(view.endsAt).toEqual(new Date(session.lastSeenAt.getTime() + idleTtlMs));

    await sessions.revoke(session.id);
    const record = await store.get(session.id);
    const revoked = appSessionView(record!, options.appSession);
    expect(revoked.endsAt).toEqual(record!.revokedAt);
    expect(revoked.isEnded()).toBe(true);
    expect(await sessions.validate(token)).toBeUndefined();
  });
});
