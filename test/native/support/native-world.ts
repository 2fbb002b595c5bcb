import { createHash, randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import {
  AppSessionService,
  MemoryAppSessionStore,
  resolveAtProtoOptions,
  TypeOrmAppSessionStore,
  type AppSessionStore,
  type AtProtoModuleOptions,
  type ResolvedAtProtoOptions,
} from 'nestjs-atproto-auth';
import { parseNativeLoginRequest } from '../../../lib/native/native-login-request.js';
import type { NativeTokenStore } from '../../../lib/native/native-store.interface.js';
import { AtProtoNativeService } from '../../../lib/native/native.service.js';
import { MemoryNativeStore } from '../../../lib/storage/memory/memory-native.store.js';
import { TypeOrmNativeStore } from '../../../lib/storage/typeorm/typeorm-native.store.js';

export const PUBLIC_URL = 'http://127.0.0.1:3000';
export const CUSTOM_REDIRECT = 'com.example.app:/oauth/callback';
export const CLI_REDIRECT = 'http://127.0.0.1/callback';

/** Resolved module options with `native` on, as the module builds them at boot. */
export async function nativeOptions(
  extra: Partial<AtProtoModuleOptions> = {},
): Promise<{ options: ResolvedAtProtoOptions; secret: Uint8Array; kid: string }> {
  const secret = randomBytes(32);
  const kid = 'n1';
  const options = await resolveAtProtoOptions({
    publicUrl: PUBLIC_URL,
    encryption: { activeKeyId: 'e1', keys: { e1: randomBytes(32).toString('base64') } },
    storage: 'memory',
    native: {
      redirectUris: [CUSTOM_REDIRECT, CLI_REDIRECT],
      tokenSecrets: { activeKid: kid, keys: { [kid]: secret.toString('base64') } },
    },
    ...extra,
  });
  return { options, secret: new Uint8Array(secret), kid };
}

/** One app instance: its app sessions and native service, on memory or a DataSource. */
export interface NativeInstance {
  service: AtProtoNativeService;
  appSessions: AppSessionService;
  appSessionStore: AppSessionStore;
  store: NativeTokenStore;
}

export function nativeInstance(
  options: ResolvedAtProtoOptions,
  dataSource?: DataSource,
): NativeInstance {
  const appSessionStore = dataSource
    ? new TypeOrmAppSessionStore(dataSource)
    : new MemoryAppSessionStore();
  const store = dataSource
    ? new TypeOrmNativeStore(dataSource)
    : new MemoryNativeStore({ appSessions: appSessionStore });
  const appSessions = new AppSessionService(options, appSessionStore);
  return {
    service: new AtProtoNativeService(options, appSessions, store),
    appSessions,
    appSessionStore,
    store,
  };
}

/** A PKCE pair (RFC 7636, S256). */
export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

export function randomDid(): string {
  return `did:plc:${randomBytes(12).toString('hex')}`;
}

/**
 * A native login as far as the module's callback: the request parsed from `/login`, then
 * the code issued for `did`. Returns the code and what the token request needs.
 */
export async function signIn(
  instance: NativeInstance,
  options: ResolvedAtProtoOptions,
  did = randomDid(),
  redirectUri = CUSTOM_REDIRECT,
): Promise<{ did: string; code: string; verifier: string; redirectUri: string; url: URL }> {
  const { verifier, challenge } = pkce();
  const request = parseNativeLoginRequest(
    {
      input: 'alice.test',
      redirect_uri: redirectUri,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state: 'st',
    },
    options.native,
  )!;
  const url = await instance.service.issueCode(did, request);
  return { did, code: url.searchParams.get('code')!, verifier, redirectUri, url };
}

/** Signs in and exchanges the code: a token pair. */
export async function tokenPair(
  instance: NativeInstance,
  options: ResolvedAtProtoOptions,
  did?: string,
) {
  const login = await signIn(instance, options, did);
  const tokens = await instance.service.token(
    {
      grant_type: 'authorization_code',
      code: login.code,
      code_verifier: login.verifier,
      redirect_uri: login.redirectUri,
    },
    'TestApp/1.0',
  );
  return { ...login, tokens };
}

/** The claims of a JWT, read without verifying (for assertions only). */
export function claimsOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8'));
}

export function headerOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString('utf8'));
}

/**
 * Fakes `Date` only (the drivers' timers and sockets keep running), starting at `now`;
 * move it with `jest.setSystemTime`. Undo with `jest.useRealTimers()`.
 */
export function fakeDateOnly(
  jestApi: { useFakeTimers: (config?: object) => unknown },
  now: number,
) {
  jestApi.useFakeTimers({
    now,
    doNotFake: [
      'hrtime',
      'nextTick',
      'performance',
      'queueMicrotask',
      'requestAnimationFrame',
      'cancelAnimationFrame',
      'requestIdleCallback',
      'cancelIdleCallback',
      'setImmediate',
      'clearImmediate',
      'setInterval',
      'clearInterval',
      'setTimeout',
      'clearTimeout',
    ],
  });
}
