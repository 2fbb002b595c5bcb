#!/usr/bin/env node
// A command-line app signing in to the sample through the browser (RFC 8252), as
// docs/native-apps.md describes:
//
//   node sample/cli.mjs <handle> [--api http://127.0.0.1:3000] [--no-open]
//
// 1. makes a PKCE pair and listens on http://127.0.0.1:<free port>/cli;
// 2. opens the system browser at the sample's /oauth/login (the user signs in at their PDS);
// 3. receives the one-time code on its loopback listener, checks `state`, and exchanges the
//    code (with the PKCE verifier) at POST /oauth/token for an access/refresh token pair;
// 4. calls GET /api/session with `Authorization: Bearer <access token>`, which acts on the
//    user's PDS, and prints what it answered; then signs out (POST /oauth/revoke).
// Plain Node.js (>= 22), no dependencies: the tokens live only in this process.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

const args = process.argv.slice(2);
const handle = args.find((a) => !a.startsWith('--'));
const api =
  (args.includes('--api') ? args[args.indexOf('--api') + 1] : undefined) ??
  `http://127.0.0.1:${process.env.PORT || '3000'}`;
const open = !args.includes('--no-open');
if (!handle) {
  console.error('usage: node sample/cli.mjs <handle> [--api http://127.0.0.1:3000] [--no-open]');
  process.exit(2);
}

const verifier = randomBytes(32).toString('base64url');
const challenge = createHash('sha256').update(verifier).digest('base64url');
const state = randomBytes(16).toString('base64url');

// The loopback redirect: one request, then the listener closes.
let redirectUri = '';
const code = await new Promise((resolve, reject) => {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== '/cli') return res.writeHead(404).end();
    const ok = url.searchParams.get('state') === state && url.searchParams.get('code');
    res
      .writeHead(ok ? 200 : 400, { 'Content-Type': 'text/plain; charset=utf-8' })
      .end(ok ? 'Signed in: you can close this window.' : 'This sign-in was not started here.');
    server.close();
    if (ok) resolve(url.searchParams.get('code'));
    else reject(new Error('the browser came back with a wrong state or no code'));
  });
  server.listen(0, '127.0.0.1', () => {
    redirectUri = `http://127.0.0.1:${server.address().port}/cli`;
    const login = new URL('/oauth/login', api);
    login.search = new URLSearchParams({
      input: handle,
      redirect_uri: redirectUri,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state,
    }).toString();
    console.log(`Open this URL to sign in: ${login.href}`);
    if (open) openBrowser(login.href);
  });
});

const tokens = await post('/oauth/token', {
  grant_type: 'authorization_code',
  code,
  code_verifier: verifier,
  redirect_uri: redirectUri,
});
const res = await fetch(new URL('/api/session', api), {
  headers: { Authorization: `Bearer ${tokens.access_token}` },
});
const body = await res.json();
if (!res.ok) throw new Error(`GET /api/session answered ${res.status}: ${JSON.stringify(body)}`);
console.log(`Signed in as ${body.handle} (${body.did}); the PDS answered for the access token.`);
await post('/oauth/revoke', { token: tokens.refresh_token });
console.log('Signed out.');

async function post(path, form) {
  const res = await fetch(new URL(path, api), { method: 'POST', body: new URLSearchParams(form) });
  const json = res.status === 200 ? await res.json() : await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`POST ${path} answered ${res.status}: ${json.error ?? ''}`);
  return json;
}

function openBrowser(url) {
  const command =
    process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
  spawn(command, [url], { stdio: 'ignore', detached: true })
    .on('error', () => console.log('(could not open a browser: open the URL yourself)'))
    .unref();
}
