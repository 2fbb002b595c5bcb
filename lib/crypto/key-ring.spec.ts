import { createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { bytesEncodings, leaks } from '../../test/support/secret-needles.js';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import { AtProtoDecryptionError } from '../errors/at-proto-decryption.error.js';
import { KeyRing, type KeyRingOptions } from './key-ring.js';

const k1 = randomBytes(32).toString('base64');
const k2 = randomBytes(32).toString('base64');

function configProblems(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AtProtoConfigError);
    return (err as AtProtoConfigError).problems;
  }
  throw new Error('expected an AtProtoConfigError');
}

describe('KeyRing', () => {
  it('round-trips under the active key and binds the value to its context', () => {
    const ring = new KeyRing({ activeKeyId: 'a', keys: { a: k1 } });
    const env = ring.encrypt('hello – ünïcode ✓', 't.c');
    expect(env.startsWith('v1.a.')).toBe(true);
    expect(ring.decrypt(env, 't.c')).toBe('hello – ünïcode ✓');
    const err = (() => {
      try {
        ring.decrypt(env, 't.other');
      } catch (e) {
        return e as AtProtoDecryptionError;
      }
    })();
    expect(err).toBeInstanceOf(AtProtoDecryptionError);
    expect(err?.reason).toBe('authentication-failed');
    expect(err?.column).toBe('t.other');
    expect(err?.keyId).toBe('a');
  });

  it('gives a different envelope for the same value each time (fresh IV)', () => {
    const ring = new KeyRing({ activeKeyId: 'a', keys: { a: k1 } });
    expect(ring.encrypt('same', 'x.y')).not.toBe(ring.encrypt('same', 'x.y'));
  });

  it('uses the named active key, not the first one, and still decrypts older keys', () => {
    // Integer-like ids are reordered by JavaScript: "2" comes before "10" whatever the literal says.
    const old = new KeyRing({ activeKeyId: '2', keys: { '2': k1 } });
    const stored = old.encrypt('v', 't.c');
    const ring = new KeyRing({ activeKeyId: '10', keys: { '10': k2, '2': k1 } });
    expect(Object.keys({ '10': k2, '2': k1 })[0]).toBe('2');
    expect(ring.encrypt('v', 't.c').startsWith('v1.10.')).toBe(true);
    expect(ring.decrypt(stored, 't.c')).toBe('v');
    expect(ring.needsReencryption(stored)).toBe(true);
  });

  it('decrypts independently with node:crypto from the documented envelope', () => {
    const ring = new KeyRing({ activeKeyId: 'k-2026', keys: { 'k-2026': k1 } });
    const env = ring.encrypt('plain text', 'tbl.col');
    const [version, kid, ivB64, bodyB64] = env.split('.') as [string, string, string, string];
    expect(version).toBe('v1');
    const iv = Buffer.from(ivB64, 'base64url');
    const body = Buffer.from(bodyB64, 'base64url');
    expect(iv).toHaveLength(12);
    const d = createDecipheriv('aes-256-gcm', Buffer.from(k1, 'base64'), iv);
    d.setAAD(Buffer.from(`nestjs-atproto-auth:v1:${kid}:tbl.col`));
    d.setAuthTag(body.subarray(body.length - 16));
    const out = Buffer.concat([d.update(body.subarray(0, body.length - 16)), d.final()]);
    expect(out.toString()).toBe('plain text');
  });

  it.each([
    ['unknown key id', (e: string) => e.replace('v1.a.', 'v1.zz.'), 'unknown-key', 'zz'],
    ['wrong key', (e: string) => e, 'authentication-failed', 'a'],
    ['flipped byte', (e: string) => flip(e), 'authentication-failed', 'a'],
    ['truncated', (e: string) => e.slice(0, 30), 'malformed', undefined],
    ['not an envelope', () => '{"access_token":"x"}', 'malformed', undefined],
  ])(
    'refuses %s with a typed error that names key and column, not the value',
    (_, mutate, reason, kid) => {
      const writer = new KeyRing({ activeKeyId: 'a', keys: { a: k1 } });
      const reader =
        _ === 'wrong key' ? new KeyRing({ activeKeyId: 'a', keys: { a: k2 } }) : writer;
      const env = mutate(writer.encrypt('s3cr3t-value', 't.c'));
      try {
        reader.decrypt(env, 't.c');
        throw new Error('expected failure');
      } catch (e) {
        expect(e).toBeInstanceOf(AtProtoDecryptionError);
        const err = e as AtProtoDecryptionError;
        expect(err.code).toBe('ERR_AT_PROTO_DECRYPT');
        expect(err.reason).toBe(reason);
        expect(err.keyId).toBe(kid);
        expect(err.message).toContain('t.c');
        expect(err.message).not.toContain('s3cr3t');
        expect(err.message).not.toContain(env);
      }
    },
  );

  it('reports every configuration problem at once', () => {
    const problems = configProblems(
      () =>
        new KeyRing({
          activeKeyId: 'missing',
          keys: {
            short: randomBytes(16).toString('base64'),
            'bad id!': k1,
            nope: 'not base64 ***',
          },
        }),
    );
    expect(problems).toHaveLength(4);
    expect(problems.join('\n')).toMatch(/decodes to 16 bytes/);
    expect(problems.join('\n')).toMatch(/invalid key id/);
    expect(problems.join('\n')).toMatch(/"nope"\] is not base64/);
    expect(problems.join('\n')).toMatch(/activeKeyId "missing" is not a key id/);
  });

  it('refuses an empty ring and duplicate ids', () => {
    expect(configProblems(() => new KeyRing({ activeKeyId: 'a', keys: {} })).join()).toMatch(
      /empty/,
    );
    expect(
      configProblems(() => new KeyRing({ activeKeyId: 'a', keys: { a: k1, A: k2 } })).join(),
    ).toMatch(/duplicate key id "A"/);
  });
});

function flip(envelope: string): string {
  const parts = envelope.split('.');
  const body = Buffer.from(parts[3]!, 'base64url');
  body[0] = body[0]! ^ 0x01;
  parts[3] = body.toString('base64url');
  return parts.join('.');
}

describe('KeyRing never echoes key material and refuses weak rings', () => {
  const keyBytes = randomBytes(32);
  const key = keyBytes.toString('base64');
  const keyUrl = keyBytes.toString('base64url');
  const keyHex = keyBytes.toString('hex');
  const needles = [{ label: 'key (clear)', value: key }, ...bytesEncodings('key', keyBytes)];
  const fingerprint = (id: string) => createHash('sha256').update(id).digest('hex').slice(0, 6);

  it.each<[string, KeyRingOptions, string]>([
    ['key and id swapped', { activeKeyId: '2026-11', keys: { [key]: '2026-11' } }, key],
    ['both swapped', { activeKeyId: key, keys: { [key]: '2026-11' } }, key],
    ['a base64url key as id', { activeKeyId: keyUrl, keys: { [keyUrl]: '2026-11' } }, keyUrl],
    ['a hex key as id', { activeKeyId: keyHex, keys: { [keyHex]: 'x' } }, keyHex],
    ['activeKeyId set to the key', { activeKeyId: key, keys: { '2026-11': key } }, key],
    ['activeKeyId set to its base64url', { activeKeyId: keyUrl, keys: { a: key } }, keyUrl],
    [
      'the key as id twice',
      { activeKeyId: 'a', keys: { a: k1, [keyUrl]: k2, [keyUrl.toLowerCase()]: k2 } },
      keyUrl,
    ],
  ])('%s: the error names the id by length and SHA-256 prefix only', (_, options, shownId) => {
    let error: AtProtoConfigError | undefined;
    try {
      new KeyRing(options);
    } catch (e) {
      error = e as AtProtoConfigError;
    }
    expect(error).toBeInstanceOf(AtProtoConfigError);
    const text = [error!.message, ...error!.problems, ...KeyRing.validate(options)].join('\n');
    expect(leaks(text, needles)).toEqual([]);
    expect(
      leaks(
        text.toLowerCase(),
        needles.map((n) => ({ ...n, value: n.value.toLowerCase() })),
      ),
    ).toEqual([]);
    expect(text).toContain(`${shownId.length} characters, SHA-256 ${fingerprint(shownId)}`);
  });

  it.each(['base64url', 'hex'] as const)(
    'hides a short (16-byte) key given as activeKeyId in %s',
    (encoding) => {
      const short = randomBytes(16);
      const id = short.toString(encoding);
      const text = configProblems(
        () => new KeyRing({ activeKeyId: id, keys: { a: short.toString('base64') } }),
      ).join('\n');
      expect(leaks(text, bytesEncodings('short key', short))).toEqual([]);
      expect(text).toContain(`${id.length} characters, SHA-256 ${fingerprint(id)}`);
    },
  );

  it('still names short, valid ids in clear', () => {
    const problems = configProblems(
      () => new KeyRing({ activeKeyId: '2026-12', keys: { '2026-11': k1 } }),
    );
    expect(problems.join('\n')).toMatch(/activeKeyId "2026-12" is not a key id .*known: "2026-11"/);
  });

  it.each([
    ['all zero', Buffer.alloc(32)],
    ['all 0xff', Buffer.alloc(32, 0xff)],
    ['a repeated 4-byte pattern', Buffer.alloc(32, Buffer.from([1, 2, 3, 4]))],
    ['15 distinct values', Buffer.from(Array.from({ length: 32 }, (_, i) => i % 15))],
  ])('refuses a degenerate key: %s', (_, bytes) => {
    const text = configProblems(
      () => new KeyRing({ activeKeyId: 'a', keys: { a: bytes.toString('base64') } }),
    ).join('\n');
    expect(text).toContain(
      `encryption.keys["a"] has only ${new Set(bytes).size} distinct byte value`,
    );
    expect(leaks(text, bytesEncodings('key', bytes))).toEqual([]);
  });

  it('accepts 16 distinct byte values, the lowest count allowed', () => {
    const bytes = Buffer.from(Array.from({ length: 32 }, (_, i) => i % 16));
    expect(new KeyRing({ activeKeyId: 'a', keys: { a: bytes.toString('base64') } }).keyIds).toEqual(
      ['a'],
    );
  });

  it('accepts random keys (about 30 distinct byte values in 32)', () => {
    for (let i = 0; i < 200; i++) {
      const k = randomBytes(32).toString('base64');
      expect(KeyRing.validate({ activeKeyId: 'a', keys: { a: k } })).toEqual([]);
    }
  });

  it('refuses the same key under two ids, however it is written', () => {
    const text = configProblems(
      () => new KeyRing({ activeKeyId: 'a', keys: { a: key, b: ` ${key}\n`, c: k1 } }),
    ).join('\n');
    expect(text).toMatch(/encryption\.keys\["a"\] and encryption\.keys\["b"\] hold the same key/);
    expect(leaks(text, needles)).toEqual([]);
    expect(
      configProblems(() => new KeyRing({ activeKeyId: 'a', keys: { a: key, b: key } })),
    ).toHaveLength(1);
  });
});
