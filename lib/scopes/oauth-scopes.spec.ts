import 'reflect-metadata';
import { AT_PROTO_OAUTH_SCOPES_KEY } from '../at-proto.constants.js';
import { AtProtoScope } from '../decorators/at-proto-scope.decorator.js';
import { DeclaredScopes, missingScopes, parseRequiredScope } from './oauth-scopes.js';

const POST = 'repo:app.bsky.feed.post?action=create';
const need = (...scopes: string[]) => scopes.map((s) => parseRequiredScope(s, 'test'));
const missing = (granted: string, ...scopes: string[]) =>
  missingScopes(granted, need(...scopes)).map((m) => m.scope);

describe('scopes a route requires, against what a session was granted', () => {
  it('repo: every collection and action asked must be granted', () => {
    expect(missing('atproto', POST)).toEqual([POST]);
    expect(missing(`atproto ${POST}`, POST)).toEqual([]);
    expect(missing('atproto repo:app.bsky.feed.post', POST)).toEqual([]);
    // Granted create only; the route needs delete too.
    expect(
      missing(`atproto ${POST}`, 'repo:app.bsky.feed.post?action=create&action=delete'),
    ).toEqual(['repo:app.bsky.feed.post?action=create&action=delete']);
    // Another collection does not count; a wildcard grant does.
    expect(missing('atproto repo:app.bsky.feed.like', POST)).toEqual([POST]);
    expect(missing('atproto repo:*', POST)).toEqual([]);
    // A route needing every collection is not satisfied by one.
    expect(missing('atproto repo:app.bsky.feed.post', 'repo:*')).toEqual(['repo:*']);
  });

  it('transition:generic grants repo, blob and non-chat rpc, as the PDS decides', () => {
    const generic = 'atproto transition:generic';
    expect(missing(generic, POST, 'blob:image/*', 'rpc:app.bsky.feed.getFeed?aud=*')).toEqual([]);
    expect(missing(generic, 'rpc:chat.bsky.convo.sendMessage?aud=*')).toEqual([
      'rpc:chat.bsky.convo.sendMessage?aud=*',
    ]);
    expect(missing(generic, 'transition:chat.bsky')).toEqual(['transition:chat.bsky']);
    expect(
      missing(`${generic} transition:chat.bsky`, 'rpc:chat.bsky.convo.sendMessage?aud=*'),
    ).toEqual([]);
    // Every method of a service includes chat.bsky.*: not given by transition:generic alone.
    const every = 'rpc:*?aud=did:web:api.example.com%23svc';
    expect(missing(generic, every)).toEqual([every]);
    expect(missing(`${generic} transition:chat.bsky`, every)).toEqual([]);
    expect(missing(`atproto ${every}`, every)).toEqual([]);
    // Account and identity permissions are not part of transition:generic.
    expect(missing(generic, 'identity:handle')).toEqual(['identity:handle']);
  });

  it('rpc: the audience must match (or be granted as *)', () => {
    const feed = 'rpc:app.bsky.feed.getFeedSkeleton?aud=did:web:feeds.example.com%23bsky_fg';
    expect(missing('atproto rpc:app.bsky.feed.getFeedSkeleton?aud=*', feed)).toEqual([]);
    expect(
      missing(
        'atproto rpc:app.bsky.feed.getFeedSkeleton?aud=did:web:other.example.com%23bsky_fg',
        feed,
      ),
    ).toHaveLength(1);
  });

  it('blob, account and identity', () => {
    expect(missing('atproto blob:image/*', 'blob:image/png')).toEqual([]);
    expect(missing('atproto blob:image/png', 'blob:image/*')).toEqual(['blob:image/*']);
    // A pattern is covered by the same pattern or a wider one, never by a narrower one.
    expect(missing('atproto blob:image/*', 'blob:image/*')).toEqual([]);
    expect(missing('atproto blob:*/*', 'blob:image/*', 'blob:*/*')).toEqual([]);
    expect(missing('atproto blob:image/*', 'blob:*/*')).toEqual(['blob:*/*']);
    expect(missing('atproto blob:video/*', 'blob:image/*')).toEqual(['blob:image/*']);
    // transition:email is reading the account's email, which account:email grants too.
    expect(missing('atproto account:email', 'transition:email')).toEqual([]);
    expect(missing('atproto', 'transition:email')).toEqual(['transition:email']);
    expect(missing('atproto account:email?action=manage', 'account:email')).toEqual([]);
    expect(missing('atproto account:email', 'account:email?action=manage')).toHaveLength(1);
    expect(missing('atproto identity:*', 'identity:handle')).toEqual([]);
  });

  it('refuses, where it is written, what cannot be checked', () => {
    expect(() => parseRequiredScope('include:app.bsky.authFull', 'x')).toThrow(/permission set/);
    expect(() => parseRequiredScope('repo', 'x')).toThrow(/not an AT Protocol OAuth scope/);
    expect(() => parseRequiredScope('repo:a b', 'x')).toThrow(/without spaces/);
    expect(() => parseRequiredScope('repo:"x"', 'x')).toThrow(/without spaces/);
    expect(() => parseRequiredScope(42, 'x')).toThrow(TypeError);
    expect(() => AtProtoScope()).toThrow(/at least one scope/);
    expect(() => AtProtoScope('nope:thing')).toThrow(/@AtProtoScope\(\)/);
  });

  it('@AtProtoScope accumulates on a method and on a class', () => {
    @AtProtoScope('transition:chat.bsky')
    class Routes {
      @AtProtoScope(POST)
      @AtProtoScope('blob:image/*')
      post() {}
    }
    const onMethod = Reflect.getMetadata(AT_PROTO_OAUTH_SCOPES_KEY, Routes.prototype.post) as {
      scope: string;
    }[];
    expect(onMethod.map((s) => s.scope).sort()).toEqual(['blob:image/*', POST].sort());
    const onClass = Reflect.getMetadata(AT_PROTO_OAUTH_SCOPES_KEY, Routes) as { scope: string }[];
    expect(onClass.map((s) => s.scope)).toEqual(['transition:chat.bsky']);
  });
});

describe('DeclaredScopes: what a login may ask for', () => {
  const declared = new DeclaredScopes('atproto', [POST, 'blob:image/*', 'include:app.example.set']);

  it('declares the base and the optional scopes in the client metadata, once each', () => {
    expect(declared.metadataScope).toBe(`atproto ${POST} blob:image/* include:app.example.set`);
    expect(new DeclaredScopes('atproto transition:generic', ['atproto']).metadataScope).toBe(
      'atproto transition:generic',
    );
  });

  it('a login asks for the base plus declared scopes, in their declared form', () => {
    expect(declared.loginScope('blob:image/*')).toBe('atproto blob:image/*');
    // Another spelling of a declared scope is sent as declared (the server compares strings).
    expect(declared.loginScope('repo:app.bsky.feed.post?action=create')).toBe(`atproto ${POST}`);
    expect(() => declared.loginScope('repo:app.bsky.feed.like')).toThrow('repo:app.bsky.feed.like');
  });

  it('a step-up asks for the base, what was granted as far as declared, and what is missing', () => {
    const granted = 'atproto blob:image/* repo:app.example.expanded';
    expect(declared.stepUpScope(granted, need(POST))).toBe(`atproto blob:image/* ${POST}`);
  });

  it('a declared scope that covers the required one is what a step-up asks for', () => {
    const wide = new DeclaredScopes('atproto', [
      'repo:app.bsky.feed.post',
      'include:app.example.set',
    ]);
    expect(wide.canObtain(parseRequiredScope(POST, 'x'))).toBe(true);
    expect(wide.stepUpScope('atproto', need(POST))).toBe('atproto repo:app.bsky.feed.post');
    // A permission set covers nothing: what it expands to is the server's to say.
    expect(wide.canObtain(parseRequiredScope('repo:app.example.thing', 'x'))).toBe(false);
  });

  it('a route can be satisfied when its scope is declared or covered by the base scope', () => {
    expect(declared.canObtain(parseRequiredScope(POST, 'x'))).toBe(true);
    expect(declared.canObtain(parseRequiredScope('repo:app.bsky.feed.like', 'x'))).toBe(false);
    const generic = new DeclaredScopes('atproto transition:generic', []);
    expect(generic.canObtain(parseRequiredScope('repo:app.bsky.feed.like', 'x'))).toBe(true);
    expect(generic.canObtain(parseRequiredScope('transition:chat.bsky', 'x'))).toBe(false);
  });
});
