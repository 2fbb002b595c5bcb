import { OAuthResponseError } from '@atproto/oauth-client-node';
import { describeError, sanitizeLogText } from './describe-error.js';

/** An error as an authorization server can shape it: its `error_description` is remote text. */
function serverError(description: string): OAuthResponseError {
  return new OAuthResponseError(new Response(null, { status: 400 }), {
    error: 'invalid_grant',
    error_description: description,
  });
}

describe('describeError', () => {
  it.each([
    ['a newline', 'refused\nINFO [AtProtoAuth] login ok did=did:plc:admin', '\\u000a'],
    ['a carriage return', 'refused\r\nforged', '\\u000d\\u000a'],
    ['an ANSI escape', 'refused \x1b[31mred\x1b[0m', '\\u001b[31mred\\u001b[0m'],
    ['U+2028 (a line break for JavaScript and JSON readers)', 'refused\u2028forged', '\\u2028'],
    ['U+2029', 'refused\u2029forged', '\\u2029'],
  ])('escapes %s in a remote server message', (_, description, escaped) => {
    const line = describeError(serverError(description));
    expect(line).toContain('Error: OAuth "invalid_grant" error: refused');
    expect(line).toContain(escaped);
    for (const raw of ['\n', '\r', '\x1b', '\u2028', '\u2029']) expect(line).not.toContain(raw);
  });

  it('caps a long message at 500 characters', () => {
    const line = describeError(serverError('x'.repeat(10_000)));
    expect(line).toHaveLength(500);
    expect(line.startsWith('Error: OAuth "invalid_grant" error: xxx')).toBe(true);
    expect(line.endsWith('x…')).toBe(true);
  });

  it('describes values that are not errors, even one whose toString throws', () => {
    expect(describeError('plain\ntext')).toBe('plain\\u000atext');
    const hostile = {
      toString() {
        throw new TypeError('no');
      },
    };
    expect(describeError(hostile)).toBe('[a value that cannot be printed]');
  });
});

describe('sanitizeLogText', () => {
  it('leaves ordinary text alone, non-ASCII letters and emoji included', () => {
    const text = 'Résumé – ünïcode ✓ 😀 "quoted" \\ backslash';
    expect(sanitizeLogText(text)).toBe(text);
  });

  it.each([
    ['C0 controls, tab included', '\x00\x07\t\x1f', '\\u0000\\u0007\\u0009\\u001f'],
    ['DEL', '\x7f', '\\u007f'],
    ['C1 controls (NEL, CSI)', '\x85\x9b', '\\u0085\\u009b'],
    ['line and paragraph separators', '\u2028\u2029', '\\u2028\\u2029'],
    [
      'bidi embeddings and overrides',
      '\u202a\u202b\u202c\u202d\u202e',
      '\\u202a\\u202b\\u202c\\u202d\\u202e',
    ],
    ['bidi isolates', '\u2066\u2067\u2068\u2069', '\\u2066\\u2067\\u2068\\u2069'],
    ['bidi marks', '\u200e\u200f\u061c', '\\u200e\\u200f\\u061c'],
    ['a lone surrogate', 'a\ud800b', 'a\\ud800b'],
  ])('escapes %s', (_, raw, escaped) => {
    expect(sanitizeLogText(`[${raw}]`)).toBe(`[${escaped}]`);
  });

  it('is idempotent, so text sanitized twice (log line and event) reads the same', () => {
    for (const text of ['a\nb\x1b[0m\u2028', 'é'.repeat(600), '\n'.repeat(200)]) {
      const once = sanitizeLogText(text);
      expect(sanitizeLogText(once)).toBe(once);
    }
  });

  it('never cuts an escape or a surrogate pair in two when capping', () => {
    for (let pad = 490; pad < 500; pad++) {
      for (const tail of ['\n\n\n\n', '😀😀😀😀']) {
        const out = sanitizeLogText('a'.repeat(pad) + tail + 'z'.repeat(50));
        expect(out.length).toBeLessThanOrEqual(500);
        expect(out.endsWith('…')).toBe(true);
        expect(out).not.toMatch(/\\u[0-9a-f]{0,3}…$/);
        expect(out).not.toMatch(/[\ud800-\udbff]…$/);
      }
    }
  });
});
