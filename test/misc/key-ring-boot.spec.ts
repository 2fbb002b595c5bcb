import { randomBytes } from 'node:crypto';
import { AtProtoConfigError, resolveAtProtoOptions } from 'nestjs-atproto-auth';
import { bytesEncodings, leaks } from '../support/secret-needles.js';

// The module's boot validation (resolveAtProtoOptions) reports key-ring problems with the
// rest of the options: none of its messages may carry the key, however it was misplaced.
describe('boot errors about the encryption key ring', () => {
  const bytes = randomBytes(32);
  const key = bytes.toString('base64');
  const needles = [{ label: 'key (clear)', value: key }, ...bytesEncodings('key', bytes)];

  it.each([
    ['key and id swapped', { activeKeyId: '2026-11', keys: { [key]: '2026-11' } }],
    ['activeKeyId set to the key', { activeKeyId: key, keys: { '2026-11': key } }],
    [
      'activeKeyId set to the key in base64url',
      { activeKeyId: bytes.toString('base64url'), keys: { '2026-11': key } },
    ],
    ['activeKeyId set to the key in hex', { activeKeyId: bytes.toString('hex'), keys: { a: key } }],
    ['the key under two ids', { activeKeyId: 'a', keys: { a: key, b: key } }],
  ])('%s: refused, and the error does not contain the key', async (_, encryption) => {
    const error = await resolveAtProtoOptions({ publicUrl: 'http://127.0.0.1:3000', encryption })
      .then(() => undefined)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AtProtoConfigError);
    const { message, problems, stack } = error as AtProtoConfigError;
    expect(leaks([message, ...problems, stack ?? ''].join('\n'), needles)).toEqual([]);
  });
});
