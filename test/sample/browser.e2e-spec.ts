/**
 * ONE real-browser pass over the sample's login: headless Chromium (Debian's
 * /usr/bin/chromium through playwright-core) opens the sample, submits the login form,
 * signs in and authorizes on the real PDS UI, and lands on /me. The scripted tests in
 * sample.e2e-spec.ts cover the rest; this one proves the pages work in a browser (cookies,
 * redirects across 127.0.0.1 and localhost, the PDS's own UI).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startTestPds, type TestAccount, type TestPds } from '../e2e/support/pds.js';
import { startSample, type RunningSample } from './support.js';

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
const STEP_TIMEOUT_MS = 30_000;

// Runs wherever Chromium is installed, and always on CI (where a missing browser must fail).
const runs = existsSync(CHROMIUM) || process.env.CI === 'true';
if (!runs) {
  console.warn(
    `SKIPPED browser.e2e-spec.ts: ${CHROMIUM} is missing. Install it with ` +
      '`apt-get update && apt-get install -y chromium` (on CI it is required and never skipped).',
  );
}

describe('sample app in a real browser', () => {
  let pds: TestPds;
  let alice: TestAccount;
  let sample: RunningSample;
  let userDataDir: string | undefined;
  let context: BrowserContext | undefined;

  beforeAll(async () => {
    if (!runs) return;
    pds = await startTestPds();
    alice = await pds.createAccount('alice.test');
    sample = await startSample(pds);
  });
  afterAll(async () => {
    try {
      await context?.close();
    } finally {
      if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
      await sample?.close();
      await pds?.stop();
    }
  });

  (runs ? it : it.skip)(
    'logs in from the login page through the PDS sign-in and consent, landing on /me',
    async () => {
      userDataDir = await mkdtemp(join(tmpdir(), 'sample-chromium-'));
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: ARGS,
        timeout: 60_000,
      });
      context.setDefaultTimeout(STEP_TIMEOUT_MS);
      context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
      const page = context.pages()[0] ?? (await context.newPage());
      try {
        await page.goto(`${sample.url}/`);
        await page.getByLabel('Handle').fill(alice.handle);
        await page.getByRole('button', { name: 'Sign in' }).click();

        // The PDS's authorization page: the login hint pre-fills the username.
        await page.waitForURL((url) => url.origin === pds.url);
        const password = page.locator('input[type="password"]');
        await password.fill(alice.password);
        await page.getByRole('button', { name: 'Sign in', exact: true }).click();
        await page.getByRole('button', { name: 'Authorize', exact: true }).click();

        await page.waitForURL(`${sample.url}/me`);
        await expectText(page, '#did', alice.did);
        await expectText(page, '#handle', alice.handle);
        expect(await page.locator('#no-profile').textContent()).toBe('no profile record yet');
      } catch (error) {
        await screenshot(page, error);
        throw error;
      }
    },
    120_000,
  );
});

async function expectText(page: Page, selector: string, expected: string): Promise<void> {
  const locator = page.locator(selector);
  await locator.waitFor();
  expect((await locator.textContent())?.trim()).toBe(expected);
}

/** Saves what the browser showed when the test failed, and says where. */
async function screenshot(page: Page, error: unknown): Promise<void> {
  try {
    const dir = await mkdtemp(join(tmpdir(), 'sample-browser-failure-'));
    const file = join(dir, 'failure.png');
    await page.screenshot({ path: file, fullPage: true, timeout: 10_000 });
    console.error(
      `Browser test failed at ${page.url()}: ${error instanceof Error ? error.message : String(error)}\n` +
        `Screenshot: ${file}`,
    );
  } catch (shotError) {
    console.error(
      `Browser test failed at ${page.url()}; the screenshot failed too: ${String(shotError)}`,
    );
  }
}
