/**
 * A single-page app on another origin, in a real browser (Debian's Chromium through
 * playwright-core): the app's page starts the login with a form POST to the backend, signs in
 * on the real PDS, lands back on its own origin, calls a guarded route with
 * `credentials: 'include'` (CORS set up as docs/deployment.md says) and logs out. A page on an
 * origin the backend does not trust cannot log the user out.
 */
import { Controller, Get, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { INestApplication } from '@nestjs/common';
import { chromium, type BrowserContext } from 'playwright-core';
import { AtProtoDid, AtProtoModule } from 'nestjs-atproto-auth';
import { freePort } from '../support/redis-server.js';
import { randomKey } from '../support/key-ring.js';
import { startTestPds, type TestAccount, type TestPds } from './support/pds.js';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];
const runs = existsSync(CHROMIUM) || process.env.CI === 'true';

@Controller()
class MeController {
  @Get('me')
  me(@AtProtoDid() did: string) {
    return { did };
  }
}

/** A static site on its own origin: the single-page app (or an untrusted one). */
async function serveSite(port: number, pages: Record<string, string>): Promise<Server> {
  const server = createServer((req, res) => {
    const page = pages[(req.url ?? '/').split('?')[0]!];
    if (page === undefined) return res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(page);
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return server;
}

describe('a single-page app on another origin, in Chromium', () => {
  let pds: TestPds;
  let nina: TestAccount;
  let app: INestApplication;
  let sites: Server[] = [];
  let context: BrowserContext | undefined;
  let userDataDir: string | undefined;
  let api: string;
  let spa: string;
  let other: string;

  beforeAll(async () => {
    if (!runs) return;
    pds = await startTestPds();
    nina = await pds.createAccount('nina.test');
    const [apiPort, spaPort, otherPort] = [await freePort(), await freePort(), await freePort()];
    api = `http://127.0.0.1:${apiPort}`;
    spa = `http://127.0.0.1:${spaPort}`;
    other = `http://127.0.0.1:${otherPort}`;
    @Module({
      imports: [
        AtProtoModule.forRoot({
          publicUrl: api, // the loopback development client: no keys, plain http
          encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
          storage: 'memory',
          handleResolver: pds.url,
          plcDirectoryUrl: pds.plcUrl,
          allowHttpServers: true,
          dangerouslyAllowPrivateHosts: [new URL(pds.url).host, new URL(pds.plcUrl).host],
          trustedOrigins: [spa],
        }),
      ],
      controllers: [MeController],
    })
    class ApiModule {}
    app = await NestFactory.create(ApiModule, { logger: ['error'] });
    app.enableCors({ origin: [spa], credentials: true });
    await app.listen(apiPort, '127.0.0.1');
    const callApi = `
      <pre id="me">…</pre><pre id="logout">…</pre>
      <script>
        const show = (id, v) => (document.getElementById(id).textContent = v);
        async function me() {
          const res = await fetch('${api}/me', { credentials: 'include' });
          show('me', res.status + ' ' + (res.ok ? (await res.json()).did : ''));
        }
        async function logout() {
          const res = await fetch('${api}/oauth/logout', { method: 'POST', credentials: 'include' })
            .catch(() => ({ status: 'blocked' }));
          show('logout', String(res.status));
        }
      </script>`;
    sites = [
      await serveSite(spaPort, {
        '/': `<form method="post" action="${api}/oauth/login">
                <input name="input" aria-label="Handle">
                <input type="hidden" name="returnTo" value="${spa}/after">
                <button>Sign in</button></form>`,
        '/after': callApi,
      }),
      await serveSite(otherPort, { '/': callApi }),
    ];
  });
  afterAll(async () => {
    try {
      await context?.close();
    } finally {
      if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
      for (const s of sites) await new Promise((r) => s.close(r));
      await app?.close();
      await pds?.stop();
    }
  });

  (runs ? it : it.skip)(
    'signs in from the app, calls the API with the cookie, and only the app can log out',
    async () => {
      userDataDir = await mkdtemp(join(tmpdir(), 'spa-chromium-'));
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: ARGS,
        timeout: 60_000,
      });
      context.setDefaultTimeout(30_000);
      const page = context.pages()[0] ?? (await context.newPage());
      await page.goto(`${spa}/`);
      await page.getByLabel('Handle').fill(nina.handle);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL((url) => url.origin === pds.url);
      await page.locator('input[type="password"]').fill(nina.password);
      await page.getByRole('button', { name: 'Sign in', exact: true }).click();
      await page.getByRole('button', { name: 'Authorize', exact: true }).click();

      await page.waitForURL(`${spa}/after`);
      await page.evaluate('me()');
      await expectText(page, '#me', `200 ${nina.did}`);

      // A page of an untrusted origin cannot end the session.
      const untrusted = await context.newPage();
      await untrusted.goto(`${other}/`);
      await untrusted.evaluate('logout()');
      await untrusted.locator('#logout').filter({ hasNotText: '…' }).waitFor();
      await page.evaluate('me()');
      await expectText(page, '#me', `200 ${nina.did}`);

      await page.evaluate('logout()');
      await expectText(page, '#logout', '204');
      await page.evaluate('me()');
      await expectText(page, '#me', '401 ');
    },
    120_000,
  );
});

async function expectText(
  page: import('playwright-core').Page,
  selector: string,
  expected: string,
): Promise<void> {
  // A string expression: this file is compiled without the DOM library.
  await page.waitForFunction(
    `document.querySelector(${JSON.stringify(selector)})?.textContent === ${JSON.stringify(expected)}`,
  );
}
