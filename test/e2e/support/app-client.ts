import { request } from 'undici';
import { CookieJar } from './cookie-jar.js';
import { signInAndConsent, type TestAccount } from './pds.js';
import { APP_ORIGIN } from './test-app.js';

/** What a response looked like, body parsed as JSON when it is JSON. */
export interface AppResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  location: string | undefined;
}

/**
 * A scripted browser for the test app: one cookie jar (one "device"), requests sent to the
 * app's loopback listener as if to https://app.e2e.internal.
 */
export class AppBrowser {
  readonly jar = new CookieJar();

  constructor(private readonly baseUrl: string) {}

  async get(path: string, headers: Record<string, string> = {}): Promise<AppResponse> {
    return this.send('GET', path, undefined, headers);
  }

  /** A same-origin POST, as a page of the app would send it. */
  async post(
    path: string,
    body?: string,
    headers: Record<string, string> = {},
  ): Promise<AppResponse> {
    return this.send('POST', path, body, {
      origin: APP_ORIGIN,
      'sec-fetch-site': 'same-origin',
      ...headers,
    });
  }

  async send(
    method: 'GET' | 'POST',
    path: string,
    body: string | undefined,
    headers: Record<string, string>,
  ): Promise<AppResponse> {
    const cookie = this.jar.header();
    const res = await request(`${this.baseUrl}${path}`, {
      method,
      body,
      headers: { ...(cookie ? { cookie } : {}), ...headers },
    });
    this.jar.store(res.headers['set-cookie']);
    const text = await res.body.text();
    let parsed: unknown = text;
    if (String(res.headers['content-type'] ?? '').includes('json') && text)
      parsed = JSON.parse(text);
    const location = res.headers.location;
    return {
      status: res.statusCode,
      headers: res.headers,
      body: parsed,
      location: Array.isArray(location) ? location[0] : location,
    };
  }

  /** Starts a login at the app and returns the authorization server URL it redirects to. */
  async startLogin(input: string, returnTo?: string): Promise<URL> {
    const q = new URLSearchParams({ input, ...(returnTo ? { returnTo } : {}) });
    const res = await this.get(`/oauth/login?${q}`);
    if (res.status !== 302 || !res.location) {
      throw new Error(`login did not redirect: ${res.status} ${JSON.stringify(res.body)}`);
    }
    return new URL(res.location);
  }

  /** The full login: app → PDS sign-in and consent → app callback. Returns the callback answer. */
  async login(account: TestAccount, returnTo?: string): Promise<AppResponse> {
    const authorizeUrl = await this.startLogin(account.handle, returnTo);
    const { callbackParams } = await signInAndConsent(authorizeUrl, {
      username: account.handle,
      password: account.password,
    });
    return this.get(`/oauth/callback?${callbackParams}`);
  }
}
