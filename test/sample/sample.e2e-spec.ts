/**
 * The sample app (sample/) end to end, booted in-process as `node sample/dist/main.js` would
 * (default loopback client, http://127.0.0.1:PORT, no keys) against a real local PDS:
 * pages, redirects vs 401 JSON, a form login through the PDS's sign-in and consent, the
 * profile read from the user's PDS, the devices list, logout and logout everywhere, and the
 * generated encryption key.
 */
import { readFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoggerService } from '@nestjs/common';
import { AtpAgent } from '@atproto/api';
import { createSampleApp } from '../../sample/src/app.js';
import { escapeHtml } from '../../sample/src/html.js';
import { AppBrowser, type AppResponse } from '../e2e/support/app-client.js';
import {
  signInAndConsent,
  startTestPds,
  type TestAccount,
  type TestPds,
} from '../e2e/support/pds.js';
import { localPdsEnv, startSample, type RunningSample } from './support.js';

const HTML = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' };
const JSON_ACCEPT = { accept: 'application/json' };

/** A browser of the sample: page requests, same-origin form posts. */
class SampleBrowser extends AppBrowser {
  constructor(readonly origin: string) {
    super(origin);
  }

  page(path: string): Promise<AppResponse> {
    return this.get(path, HTML);
  }

  /** A form post from one of the sample's pages. */
  submit(path: string, fields: Record<string, string> = {}): Promise<AppResponse> {
    return this.send('POST', path, new URLSearchParams(fields).toString(), {
      ...HTML,
      'content-type': 'application/x-www-form-urlencoded',
      origin: this.origin,
      'sec-fetch-site': 'same-origin',
      'sec-fetch-mode': 'navigate',
    });
  }

  /** The login form → the PDS (scripted sign-in and consent) → the callback. */
  async formLogin(account: TestAccount): Promise<{ authorizeUrl: URL; callback: AppResponse }> {
    const start = await this.submit('/oauth/login', { input: account.handle, returnTo: '/me' });
    if (start.status !== 303 || !start.location) {
      throw new Error(
        `login form did not redirect: ${start.status} ${String(start.body).slice(0, 300)}`,
      );
    }
    const authorizeUrl = new URL(start.location);
    const { callbackParams } = await signInAndConsent(authorizeUrl, {
      username: account.handle,
      password: account.password,
    });
    return { authorizeUrl, callback: await this.page(`/oauth/callback?${callbackParams}`) };
  }
}

const text = (res: AppResponse): string => String(res.body);
const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

let pds: TestPds;
let alice: TestAccount;
let sample: RunningSample;

beforeAll(async () => {
  pds = await startTestPds();
  alice = await pds.createAccount('alice.test');
  sample = await startSample(pds);
});
afterAll(async () => {
  await sample?.close();
  await pds?.stop();
});

describe('sample app', () => {
  it('answers /health, shows the login form, and refuses /me without a session', async () => {
    const browser = new SampleBrowser(sample.url);
    const health = await browser.get('/health', JSON_ACCEPT);
    expect(health.status).toBe(200);
    expect(health.body).toEqual({ ok: true });

    const home = await browser.page('/');
    expect(home.status).toBe(200);
    expect(home.headers['content-type']).toMatch(/^text\/html/);
    expect(text(home)).toContain('<form method="post" action="/oauth/login">');
    expect(text(home)).toContain('name="input"');
    expect(text(home)).toMatch(/<input type="hidden" name="returnTo" value="\/me" ?\/?>/);

    const page = await browser.page('/me');
    expect(page.status).toBe(302);
    expect(page.location).toBe('/');
    const api = await browser.get('/me', JSON_ACCEPT);
    expect(api.status).toBe(401);
    expect(api.body).toEqual(expect.objectContaining({ statusCode: 401 }));
  });

  it('logs in with the loopback client, shows DID, handle, profile and devices, and logs out', async () => {
    const browser = new SampleBrowser(sample.url);
    const { authorizeUrl, callback } = await browser.formLogin(alice);
    // The default publicUrl makes the sample the AT Protocol loopback client.
    expect(authorizeUrl.origin).toBe(pds.url);
    expect(authorizeUrl.searchParams.get('client_id')).toMatch(/^http:\/\/localhost\?/);
    expect(callback.status).toBe(302);
    expect(callback.location).toBe('/me');
    const cookie = ([] as string[])
      .concat(callback.headers['set-cookie'] ?? [])
      .find((c) => c.startsWith('atproto_session='));
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Lax/i);
    expect(cookie).not.toMatch(/Secure/i); // plain http on 127.0.0.1

    const me = await browser.page('/me');
    expect(me.status).toBe(200);
    expect(text(me)).toContain(alice.did);
    expect(text(me)).toContain(`<dd id="handle">${alice.handle}</dd>`);
    expect(text(me)).toContain('no profile record yet');
    expect(text(me).match(/class="device"/g)).toHaveLength(1);
    expect(text(me)).toContain('(this device)');
    expect(text(me)).toContain('action="/oauth/logout"');
    expect(text(me)).toContain('action="/oauth/logout?everywhere=1"');

    const home = await browser.page('/');
    expect(text(home)).toContain(`Signed in as <code>${alice.did}</code>`);
    expect(text(home)).not.toContain('action="/oauth/login"');

    // alice writes a profile with her password, outside the sample; /me reads it (escaped).
    const displayName = `Alice <b>&</b> "Tester"`;
    const agent = new AtpAgent({ service: pds.url });
    await agent.login({ identifier: alice.handle, password: alice.password });
    await agent.com.atproto.repo.putRecord({
      repo: alice.did,
      collection: 'app.bsky.actor.profile',
      rkey: 'self',
      record: { $type: 'app.bsky.actor.profile', displayName, description: 'hello from the test' },
    });
    const withProfile = await browser.page('/me');
    expect(withProfile.status).toBe(200);
    expect(text(withProfile)).toMatch(
      new RegExp(`<dd id="display-name">\\s*${escapeRegExp(escapeHtml(displayName))}\\s*</dd>`),
    );
    expect(text(withProfile)).toContain('Alice &lt;b&gt;&amp;&lt;/b&gt; &quot;Tester&quot;');
    expect(text(withProfile)).not.toContain('<b>&</b>');
    expect(text(withProfile)).not.toContain('no profile record yet');

    const revokes = pds.revokeRequests.length;
    const logout = await browser.submit('/oauth/logout');
    expect(logout.status).toBe(303);
    expect(logout.location).toBe('/');
    expect(pds.revokeRequests.length).toBe(revokes + 1); // the last device: revoked at the PDS
    expect(text(await browser.page('/'))).toContain('action="/oauth/login"');
    expect((await browser.page('/me')).location).toBe('/');
    expect((await browser.get('/me', JSON_ACCEPT)).status).toBe(401);
  });

  it('"log out everywhere" ends the sessions of every device', async () => {
    const phone = new SampleBrowser(sample.url);
    const laptop = new SampleBrowser(sample.url);
    expect((await phone.formLogin(alice)).callback.status).toBe(302);
    expect((await laptop.formLogin(alice)).callback.status).toBe(302);
    const me = await laptop.page('/me');
    expect(me.status).toBe(200);
    expect(text(me).match(/class="device"/g)).toHaveLength(2);

    const logout = await laptop.submit('/oauth/logout?everywhere=1');
    expect(logout.status).toBe(303);
    expect(logout.location).toBe('/');
    for (const browser of [phone, laptop]) {
      expect((await browser.page('/me')).location).toBe('/');
      expect((await browser.get('/me', JSON_ACCEPT)).status).toBe(401);
    }
  });

  it('shows a login error as a page to browsers and as JSON to API clients', async () => {
    const browser = new SampleBrowser(sample.url);
    const page = await browser.submit('/oauth/login', { input: 'nobody.test', returnTo: '/me' });
    expect(page.status).toBe(400);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(text(page)).toContain(
      'Could not find an AT Protocol account or server for &quot;nobody.test&quot;',
    );
    const api = await browser.get('/oauth/login?input=nobody.test', JSON_ACCEPT);
    expect(api.status).toBe(400);
    expect(api.body).toEqual(expect.objectContaining({ statusCode: 400 }));
  });

  it('generates the encryption key on first start (mode 0600, never logged) and reuses it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sample-key-'));
    try {
      const env = { PORT: '3999', SAMPLE_DATA_DIR: dir, ...localPdsEnv(pds) };
      const boot = async (): Promise<string[]> => {
        const lines: string[] = [];
        const capture = (message: unknown): void => void lines.push(String(message));
        const logger: LoggerService = {
          log: capture,
          error: capture,
          warn: capture,
          debug: capture,
          verbose: capture,
          fatal: capture,
        };
        const app = await createSampleApp(env, { logger });
        await app.init();
        await app.close();
        return lines;
      };

      const first = await boot();
      const keyFile = join(dir, 'sample-enc-key');
      const key = (await readFile(keyFile, 'utf8')).trim();
      expect(Buffer.from(key, 'base64')).toHaveLength(32);
      expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
      expect(
        first.some((l) => l.includes('generated a new encryption key') && l.includes(keyFile)),
      ).toBe(true);
      expect(first.join('\n')).not.toContain(key);
      await expect(stat(join(dir, 'sample.sqlite'))).resolves.toBeDefined();

      const second = await boot();
      expect(second.some((l) => l.includes('generated'))).toBe(false);
      expect((await readFile(keyFile, 'utf8')).trim()).toBe(key);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
