import { AtProtoBadRequestError } from '../errors/at-proto-http.errors.js';
import { normalizeReturnTo } from './login-input.js';

const PUBLIC = 'https://api.example.com';
const TRUSTED = ['https://app.example.com', 'http://127.0.0.1:5173'];

describe('normalizeReturnTo', () => {
  it.each([
    ['/me', '/me'],
    ['/a/../b?x=1#h', '/b?x=1#h'],
    [undefined, '/home'],
  ])('keeps a path on this app: %s', (input, expected) => {
    expect(normalizeReturnTo(input, PUBLIC, '/home', TRUSTED)).toBe(expected);
  });

  it.each([
    ['https://app.example.com/after-login?x=1', 'https://app.example.com/after-login?x=1'],
    ['http://127.0.0.1:5173/', 'http://127.0.0.1:5173/'],
  ])('takes an absolute URL on a trusted origin: %s', (input, expected) => {
    expect(normalizeReturnTo(input, PUBLIC, '/home', TRUSTED)).toBe(expected);
  });

  it.each([
    'https://evil.example/',
    'https://app.example.com.evil.example/',
    'https://user@app.example.com/',
    'http://app.example.com/', // another scheme: another origin
    'https://app.example.com:8443/',
    'http://127.0.0.1:5174/',
    'javascript:alert(1)',
    '//evil.example',
    '/\\evil.example',
    '/.//evil.example',
  ])('refuses %s', (input) => {
    expect(() => normalizeReturnTo(input, PUBLIC, '/home', TRUSTED)).toThrow(
      AtProtoBadRequestError,
    );
  });

  it('without trusted origins, refuses every absolute URL', () => {
    expect(() => normalizeReturnTo('https://app.example.com/', PUBLIC, '/home')).toThrow(
      AtProtoBadRequestError,
    );
  });
});
