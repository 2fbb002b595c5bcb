/**
 * `apiKeys` options: defaults, and every bad value reported (never thrown one at a time).
 * The prefix is what secret scanners match and what tells a key from a JWT on the wire, so
 * its charset and length are checked at boot.
 */
import { resolveApiKeyOptions } from '../../lib/api-keys/api-key-options.js';

function resolve(raw: unknown): {
  problems: string[];
  resolved: ReturnType<typeof resolveApiKeyOptions>;
} {
  const problems: string[] = [];
  const resolved = resolveApiKeyOptions(raw, problems);
  return { problems, resolved };
}

describe('resolveApiKeyOptions', () => {
  it('defaults: prefix atp_, last use written every 5 minutes at most, ended keys kept a day', () => {
    expect(resolve(undefined)).toEqual({
      problems: [],
      resolved: { prefix: 'atp_', lastUsedIntervalMs: 300_000, revokedGraceMs: 86_400_000 },
    });
    expect(resolve({}).resolved).toEqual({
      prefix: 'atp_',
      lastUsedIntervalMs: 300_000,
      revokedGraceMs: 86_400_000,
    });
  });

  it('takes valid values', () => {
    expect(resolve({ prefix: 'acme_live_', lastUsedInterval: 60_000, revokedGrace: 0 })).toEqual({
      problems: [],
      resolved: { prefix: 'acme_live_', lastUsedIntervalMs: 60_000, revokedGraceMs: 0 },
    });
    expect(resolve({ prefix: 'Bot-' }).resolved.prefix).toBe('Bot-');
  });

  it.each([
    ['', 'empty'],
    ['atp', 'no separator at the end'],
    ['a_', 'too short for a scanner to match'],
    ['abcdefghijklmnop_', 'longer than 16 characters'],
    ['_atp_', 'not starting with a letter'],
    ['9atp_', 'not starting with a letter'],
    ['at p_', 'a space'],
    ['atp._', 'a dot'],
    ['atp/_', 'a slash'],
    ['åtp_', 'a non-ASCII letter'],
    ['eyJ_', 'the start of every JWT'],
  ])('refuses prefix %j (%s)', (prefix) => {
    const { problems } = resolve({ prefix });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^apiKeys\.prefix /);
    // Says what is expected.
    expect(problems[0]).toMatch(/3 to 16/);
  });

  it('refuses a prefix that is not a string', () => {
    expect(resolve({ prefix: 42 }).problems).toEqual([
      expect.stringMatching(/^apiKeys\.prefix must be a string/),
    ]);
  });

  it.each([
    [{ lastUsedInterval: 0 }, /^apiKeys\.lastUsedInterval must be at least 1000/],
    [{ lastUsedInterval: 999 }, /^apiKeys\.lastUsedInterval must be at least 1000/],
    [{ lastUsedInterval: 1.5e3 + 0.5 }, /^apiKeys\.lastUsedInterval must be a whole number/],
    [{ lastUsedInterval: '5m' }, /^apiKeys\.lastUsedInterval must be a number of milliseconds/],
    [{ lastUsedInterval: 86_400_001 }, /^apiKeys\.lastUsedInterval must be at most 86400000/],
    [{ revokedGrace: -1 }, /^apiKeys\.revokedGrace must be >= 0/],
    [{ revokedGrace: 'a day' }, /^apiKeys\.revokedGrace must be a number of milliseconds/],
    [{ prefix: 'atp_', other: 1 }, /^apiKeys: unknown option "other"/],
  ])('refuses %j', (raw, message) => {
    expect(resolve(raw).problems).toEqual([expect.stringMatching(message)]);
  });

  it('refuses apiKeys that is not an object', () => {
    for (const raw of [null, 'atp_', 1, []]) {
      expect(resolve(raw).problems).toEqual([
        'apiKeys must be an object: { prefix?, lastUsedInterval?, revokedGrace? }',
      ]);
    }
  });

  it('reports every problem at once', () => {
    const { problems } = resolve({ prefix: '', lastUsedInterval: 1, revokedGrace: -5 });
    expect(problems).toHaveLength(3);
  });
});
