/** appSession.invalidatedCacheTtl: its default and its validation. */
import { AtProtoConfigError, resolveAtProtoOptions } from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';

const base = {
  publicUrl: 'http://127.0.0.1:4321',
  encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
  storage: 'memory' as const,
};

it('defaults to 5 minutes and takes 0 up to a day', async () => {
  expect((await resolveAtProtoOptions(base)).appSession.invalidatedCacheTtlMs).toBe(300_000);
  for (const value of [0, 60_000, 86_400_000]) {
    const resolved = await resolveAtProtoOptions({
      ...base,
      appSession: { invalidatedCacheTtl: value },
    });
    expect(resolved.appSession.invalidatedCacheTtlMs).toBe(value);
  }
});

it.each([
  [-1, /appSession.invalidatedCacheTtl must be >= 0/],
  [1.5, /appSession.invalidatedCacheTtl must be a whole number of milliseconds/],
  [86_400_001, /appSession.invalidatedCacheTtl must be at most 86400000 ms/],
  ['300000', /appSession.invalidatedCacheTtl must be a number of milliseconds/],
])('refuses %p with a message that says what to set', async (value, message) => {
  const error = await resolveAtProtoOptions({
    ...base,
    appSession: { invalidatedCacheTtl: value as number },
  }).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(AtProtoConfigError);
  expect((error as Error).message).toMatch(message);
});
