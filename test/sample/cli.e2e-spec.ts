/**
 * The sample's command-line app (sample/cli.mjs), run as a user would run it, against the
 * sample and the local PDS: it prints the login URL, the test plays the browser (scripted
 * sign-in and consent), the CLI receives its code on its loopback listener, exchanges it for
 * a token pair, calls the sample's API with the access token (which acts on the PDS) and
 * signs out with its refresh token.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { request } from 'undici';
import { AppBrowser } from '../e2e/support/app-client.js';
import {
  signInAndConsent,
  startTestPds,
  type TestAccount,
  type TestPds,
} from '../e2e/support/pds.js';
import { startSample, type RunningSample } from './support.js';

let pds: TestPds;
let sample: RunningSample;
let alice: TestAccount;

beforeAll(async () => {
  pds = await startTestPds();
  alice = await pds.createAccount('alice.test');
  sample = await startSample(pds);
});
afterAll(async () => {
  await sample?.close();
  await pds?.stop();
});

it('signs in through the browser, calls the API with its access token, and signs out', async () => {
  const cli = spawn(
    process.execPath,
    [join(process.cwd(), 'sample', 'cli.mjs'), alice.handle, '--api', sample.url, '--no-open'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  cli.stdout.on('data', (d: Buffer) => (out += d.toString()));
  cli.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => cli.once('exit', r));
  try {
    for (let i = 0; i < 200 && !/Open this URL to sign in: (\S+)/.test(out); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const loginUrl = new URL(/Open this URL to sign in: (\S+)/.exec(out)![1]!);
    // The system browser: the sample's login, the PDS's sign-in and consent, the callback.
    const browser = new AppBrowser(sample.url);
    const start = await browser.get(`${loginUrl.pathname}${loginUrl.search}`);
    expect(start.status).toBe(302);
    const { callbackParams } = await signInAndConsent(start.location!, {
      username: alice.handle,
      password: alice.password,
    });
    const back = await browser.get(`/oauth/callback?${callbackParams}`);
    expect(back.status).toBe(302);
    const landed = await request(back.location!);
    expect(landed.statusCode).toBe(200);
    await landed.body.dump();

    expect(await exited).toBe(0);
    expect(out).toContain(`Signed in as ${alice.handle} (${alice.did})`);
    expect(out).toContain('Signed out.');
    expect(err).toBe('');
  } finally {
    cli.kill();
  }
});
