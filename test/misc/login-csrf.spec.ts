import { isCrossSiteNavigation } from '../../lib/session/http.util.js';

const app = 'https://app.example.com';
type Headers = Record<string, string | string[] | undefined>;

// GET /login is refused (login CSRF) when this says true. Browsers with Fetch Metadata say
// where a navigation comes from; older ones may send Origin or Referer instead; a typed URL
// or a bookmark sends none of them.
describe('isCrossSiteNavigation (GET /login)', () => {
  it.each<[string, boolean, Headers]>([
    // Fetch Metadata decides when present, whatever Origin or Referer say.
    ['Sec-Fetch-Site: cross-site', true, { 'sec-fetch-site': 'cross-site' }],
    ['Sec-Fetch-Site: same-site', true, { 'sec-fetch-site': 'same-site' }],
    ['Sec-Fetch-Site: same-origin', false, { 'sec-fetch-site': 'same-origin' }],
    ['Sec-Fetch-Site: none (typed URL, bookmark)', false, { 'sec-fetch-site': 'none' }],
    [
      'Sec-Fetch-Site: same-origin with a foreign Referer',
      false,
      { 'sec-fetch-site': 'same-origin', referer: 'https://evil.example/' },
    ],
    [
      'Sec-Fetch-Site: cross-site with our own Referer',
      true,
      { 'sec-fetch-site': 'cross-site', referer: `${app}/page` },
    ],
    // No Fetch Metadata: Origin, then Referer.
    ['nothing at all (typed URL or bookmark in an old browser)', false, {}],
    ['Origin: ours', false, { origin: app }],
    ['Origin: another site', true, { origin: 'https://evil.example' }],
    ['Origin: a sibling subdomain', true, { origin: 'https://evil.app.example.com' }],
    ['Origin: ours over http', true, { origin: 'http://app.example.com' }],
    ['Origin: ours on another port', true, { origin: 'https://app.example.com:8443' }],
    ['Origin: null (sandboxed or privacy-redirected)', true, { origin: 'null' }],
    ['Referer: a page of ours', false, { referer: `${app}/settings?tab=1` }],
    [
      'Referer: our origin with the default port',
      false,
      { referer: 'https://app.example.com:443/' },
    ],
    ['Referer: another site', true, { referer: 'https://evil.example/attack.html' }],
    ['Referer: a look-alike prefix', true, { referer: 'https://app.example.com.evil.example/' }],
    ['Referer: not a URL', true, { referer: 'garbage' }],
    ['Origin ours, Referer foreign', true, { origin: app, referer: 'https://evil.example/' }],
    ['Origin foreign, Referer ours', true, { origin: 'https://evil.example', referer: `${app}/` }],
    ['Origin and Referer ours', false, { origin: app, referer: `${app}/login-page` }],
    ['empty Origin and Referer count as absent', false, { origin: '', referer: '' }],
    ['a repeated header with a foreign value', true, { origin: [app, 'https://evil.example'] }],
    ['a repeated header, every value ours', false, { referer: [`${app}/a`, `${app}/b`] }],
    [
      'an unknown Sec-Fetch-Site value falls back to Origin',
      true,
      { 'sec-fetch-site': 'cross-origin', origin: 'https://evil.example' },
    ],
  ])('%s → refused: %s', (_, refused, headers) => {
    expect(isCrossSiteNavigation({ method: 'GET', headers }, app)).toBe(refused);
  });

  it('compares against the app origin however publicUrl was written', () => {
    const headers = { referer: 'https://APP.example.com/x' };
    expect(isCrossSiteNavigation({ headers }, 'https://app.example.com')).toBe(false);
    expect(
      isCrossSiteNavigation(
        { headers: { origin: 'https://app.example.com' } },
        'https://app.example.com:443',
      ),
    ).toBe(false);
  });
});
