/**
 * Bot accounts on app passwords against the real local PDS, on PostgreSQL: an app password
 * created at the PDS, the bot logged in and acting through an `Agent`, its stored session
 * reused rather than logged in again, a forced login ending the previous session, one
 * refresh for many concurrent callers of an expired access JWT, the app password revoked at
 * the PDS and the next refresh mapped to `expired` (event, row deleted), service-auth
 * tokens minted through the bot session, and the password never stored or logged.
 */
import type { RequestListener, Server } from 'node:http';
import { Agent, AtpAgent } from '@atproto/api';
import { decodeJwt, SignJWT } from 'jose';
import type { DataSource } from 'typeorm';
import {
  AtProtoBotSessionError,
  AtProtoBotSessionService,
  AtProtoEvents,
  AtProtoServiceAuthService,
  type AtProtoEvent,
} from 'nestjs-atproto-auth';
import { TypeOrmBotSessionStore } from '../../lib/bots/bot-session.store.js';
import { createTestDatabase } from '../support/databases.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let pds: TestPds;
let t: TestApp;
let drop: () => Promise<void>;
let bots: AtProtoBotSessionService;
let bot: TestAccount;
/** The account's own agent (its main password), to manage app passwords at the PDS. */
let owner: AtpAgent;
let appPassword: string;
/** Node's own fetch: the test app wraps globalThis.fetch (to reach its https origin). */
const nodeFetch = globalThis.fetch;
const events: AtProtoEvent[] = [];
/** XRPC session calls that reached the PDS: `<nsid> <status>`. */
const calls: string[] = [];
const SESSION_CALLS = new Set([
  'com.atproto.server.createSession',
  'com.atproto.server.refreshSession',
  'com.atproto.server.deleteSession',
]);

/** Counts session calls where they arrive: in front of the PDS's own listener. */
function countSessionCalls(server: Server): void {
  const listeners = server.listeners('request') as RequestListener[];
  server.removeAllListeners('request');
  server.on('request', (req, res) => {
    const nsid = new URL(req.url ?? '/', 'http://pds').pathname.replace('/xrpc/', '');
    if (SESSION_CALLS.has(nsid)) res.once('finish', () => calls.push(`${nsid} ${res.statusCode}`));
    for (const listener of listeners) listener.call(server, req, res);
  });
}
const count = (nsid: string) => calls.filter((c) => c.startsWith(`com.atproto.server.${nsid} `));

async function rows(ds: DataSource): Promise<Array<Record<string, unknown>>> {
  return ds.query('SELECT * FROM "atproto_bot_session"');
}

async function expireAccessToken(ds: DataSource, did: string): Promise<void> {
  await ds.query('UPDATE "atproto_bot_session" SET "access_expires_at" = $1 WHERE "did" = $2', [
    Date.now() - 1000,
    did,
  ]);
}

async function newAppPassword(name: string): Promise<string> {
  const { data } = await owner.com.atproto.server.createAppPassword({ name });
  return data.password;
}

beforeAll(async () => {
  pds = await startTestPds();
  countSessionCalls(pds.pds.server as Server);
  const db = await createTestDatabase('postgres', 'e2e_bots');
  drop = db.drop;
  t = await startTestApp(pds, db.options);
  bots = t.app.get(AtProtoBotSessionService);
  t.app.get(AtProtoEvents).events$.subscribe((e) => {
    if (e.type.startsWith('bot-')) events.push(e);
  });
  bot = await pds.createAccount('robota.test');
  owner = new AtpAgent({ service: pds.url, fetch: nodeFetch });
  await owner.login({ identifier: bot.handle, password: bot.password });
  appPassword = await newAppPassword('nest-bot');
  expect(appPassword).toMatch(/^[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}$/);
});
afterAll(async () => {
  await t?.close();
  await drop?.();
  await pds?.stop();
});
beforeEach(() => {
  calls.length = 0;
  events.length = 0;
});

describe('a bot on an app password', () => {
  it('logs in, stores its JWTs encrypted, and acts through an Agent', async () => {
    const session = await bots.login(bot.handle, appPassword);
    expect(session.did).toBe(bot.did);
    expect(session.handle).toBe(bot.handle);
    expect(count('createSession')).toEqual(['com.atproto.server.createSession 200']);
    expect(events).toEqual([{ type: 'bot-session-created', did: bot.did }]);

    const agent = new Agent(session);
    const created = await agent.com.atproto.repo.createRecord({
      repo: bot.did,
      collection: 'app.bsky.feed.post',
      record: {
        $type: 'app.bsky.feed.post',
        text: 'hello from a bot',
        createdAt: new Date().toISOString(),
      },
    });
    const read = await owner.com.atproto.repo.getRecord({
      repo: bot.did,
      collection: 'app.bsky.feed.post',
      rkey: created.data.uri.split('/').pop()!,
    });
    expect((read.data.value as { text: string }).text).toBe('hello from a bot');

    const [row, ...others] = await rows(t.dataSource);
    expect(others).toEqual([]);
    expect(row).toMatchObject({ did: bot.did, handle: bot.handle, pds_url: pds.url });
    const stored = JSON.stringify(row);
    // Only ciphertext: neither the password nor any part of either JWT.
    expect(stored).not.toContain(appPassword);
    expect(stored).not.toContain('eyJ');
    expect(Number(row!.expires_at)).toBeGreaterThan(Date.now() + 30 * 86_400_000);
  });

  it('reuses the stored session instead of logging in again (the PDS limits logins)', async () => {
    const session = await bots.login(bot.handle, appPassword);
    expect(session.did).toBe(bot.did);
    expect(calls).toEqual([]);
    expect(events).toEqual([]);
    const again = await bots.login(bot.did, appPassword);
    expect(again.did).toBe(bot.did);
    expect(calls).toEqual([]);
  });

  it('refreshes once for 20 concurrent callers of an expired access JWT', async () => {
    await expireAccessToken(t.dataSource, bot.did);
    const sessions = await Promise.all(Array.from({ length: 20 }, () => bots.restore(bot.did)));
    const answers = await Promise.all(
      sessions.map((s) => new Agent(s).com.atproto.server.getSession().then((r) => r.data.did)),
    );
    expect(answers).toEqual(Array(20).fill(bot.did));
    expect(calls).toEqual(['com.atproto.server.refreshSession 200']);
    expect(events).toEqual([{ type: 'bot-session-refreshed', did: bot.did }]);
    const [row] = await rows(t.dataSource);
    expect(Number(row!.access_expires_at)).toBeGreaterThan(Date.now() + 60_000);
  });

  it('an access JWT the PDS answers ExpiredToken to is refreshed once and the call sent again', async () => {
    // An access JWT that the PDS itself signed but that has expired, stored as if it had an
    // hour left: only the PDS's answer can tell the session it must refresh.
    const manager = pds.pds.ctx.accountManager as unknown as {
      jwtKey: Parameters<SignJWT['sign']>[0];
      serviceDid: string;
    };
    const expired = await new SignJWT({ scope: 'com.atproto.appPass' })
      .setProtectedHeader({ typ: 'at+jwt', alg: 'HS256' })
      .setAudience(manager.serviceDid)
      .setSubject(bot.did)
      .setIssuedAt(Math.floor(Date.now() / 1000) - 7200)
      .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
      .sign(manager.jwtKey);
    const store = new TypeOrmBotSessionStore(t.dataSource);
    const current = (await store.get(bot.did))!;
    await store.setIfVersion(
      { ...current.value, accessJwt: expired, accessExpiresAt: Date.now() + 3_600_000 },
      current.version,
    );
    calls.length = 0;

    const agent = new Agent(await bots.restore(bot.did));
    const created = await agent.com.atproto.repo.createRecord({
      repo: bot.did,
      collection: 'app.bsky.feed.post',
      record: {
        $type: 'app.bsky.feed.post',
        text: 'after a refresh',
        createdAt: new Date().toISOString(),
      },
    });
    expect(created.data.uri).toContain(bot.did);
    expect(calls).toEqual(['com.atproto.server.refreshSession 200']);
    expect((await store.get(bot.did))!.value.accessJwt).not.toBe(expired);
  });

  it('mints service-auth tokens through the bot session (it has no OAuth session)', async () => {
    const serviceAuth = t.app.get(AtProtoServiceAuthService);
    const token = await serviceAuth.getToken(bot.did, {
      aud: 'did:web:feed.e2e.internal',
      lxm: 'app.bsky.feed.getFeedSkeleton',
    });
    expect(decodeJwt(token)).toMatchObject({ iss: bot.did, aud: 'did:web:feed.e2e.internal' });
  });

  it('warns, without the password, when it does not look like an app password', async () => {
    const before = t.logs.length;
    await bots.login(bot.handle, bot.password, { force: true });
    const logged = t.logs.slice(before).join('\n');
    expect(logged).toMatch(/does not look like an app password/);
    expect(logged).not.toContain(bot.password);
  });

  it('a forced login ends the previous session at the PDS (deleteSession) and says so', async () => {
    const [previous] = await rows(t.dataSource);
    await bots.login(bot.handle, appPassword, { force: true });
    expect(count('createSession')).toEqual(['com.atproto.server.createSession 200']);
    expect(count('deleteSession')).toEqual(['com.atproto.server.deleteSession 200']);
    expect(events).toEqual([
      { type: 'bot-session-created', did: bot.did },
      { type: 'bot-session-ended', did: bot.did, reason: 'replaced' },
    ]);
    const [row] = await rows(t.dataSource);
    expect(row!.token_set).not.toEqual(previous!.token_set);
  });

  it('wrong credentials are refused with a stable reason, and nothing is stored for them', async () => {
    const error = await bots
      .login(bot.handle, 'aaaa-bbbb-cccc-dddd', { force: true })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AtProtoBotSessionError);
    expect(error).toMatchObject({
      code: 'ERR_AT_PROTO_BOT_SESSION',
      reason: 'invalid-credentials',
      did: bot.did,
      status: 401,
    });
    // The session logged in before is still there.
    expect(await bots.has(bot.did)).toBe(true);
  });

  it('after the app password is revoked at the PDS, the next refresh ends the session: expired, event, row deleted', async () => {
    await owner.com.atproto.server.revokeAppPassword({ name: 'nest-bot' });
    const error = await bots.refresh(bot.did).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AtProtoBotSessionError);
    expect(error).toMatchObject({
      code: 'ERR_AT_PROTO_BOT_SESSION',
      reason: 'expired',
      pdsError: 'ExpiredToken',
      did: bot.did,
    });
    expect((error as AtProtoBotSessionError).ended).toBe(true);
    expect(calls).toEqual(['com.atproto.server.refreshSession 400']);
    expect(events).toEqual([
      expect.objectContaining({ type: 'bot-session-ended', did: bot.did, reason: 'expired' }),
    ]);
    expect(await rows(t.dataSource)).toEqual([]);
    await expect(bots.restore(bot.did)).rejects.toMatchObject({ reason: 'not-logged-in' });
  });

  it('an account taken down at the PDS is refused at login with account-takedown', async () => {
    const other = await pds.createAccount('robotc.test');
    const manager = pds.pds.ctx.accountManager as unknown as {
      takedownAccount(did: string, takedown: { applied: boolean; ref?: string }): Promise<void>;
    };
    await manager.takedownAccount(other.did, { applied: true, ref: 'e2e' });
    // By DID: the PDS no longer resolves the handle of a taken-down account.
    const error = await bots.login(other.did, other.password).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AtProtoBotSessionError);
    expect(error).toMatchObject({
      reason: 'account-takedown',
      pdsError: 'AccountTakedown',
      did: other.did,
    });
    expect(await bots.has(other.did)).toBe(false);
  });

  it('a session whose refresh JWT has expired ends on its next use: not-logged-in, event, row deleted', async () => {
    await bots.login(bot.handle, await newAppPassword('nest-bot-2'));
    await t.dataSource.query(
      'UPDATE "atproto_bot_session" SET "expires_at" = $1 WHERE "did" = $2',
      [Date.now() - 1000, bot.did],
    );
    events.length = 0;
    await expect(bots.restore(bot.did)).rejects.toMatchObject({ reason: 'not-logged-in' });
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual([{ type: 'bot-session-ended', did: bot.did, reason: 'expired' }]);
    expect(await rows(t.dataSource)).toEqual([]);
  });

  it('never wrote the passwords or the JWTs to the logs', async () => {
    const logs = t.logs.join('\n');
    expect(logs).not.toContain(appPassword);
    expect(logs).not.toContain(bot.password);
    expect(logs).not.toMatch(/eyJ[\w-]+\.eyJ/);
  });
});
