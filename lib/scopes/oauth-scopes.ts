import {
  AccountPermission,
  BlobPermission,
  IdentityPermission,
  IncludeScope,
  isStaticScopeValue,
  normalizeAtprotoOauthScopeValue,
  RepoPermission,
  RpcPermission,
  ScopePermissions,
  ScopePermissionsTransition,
} from '@atproto/oauth-scopes';

/**
 * One scope a route requires (`@AtProtoScope()`), parsed once, when the decorator is applied,
 * with `@atproto/oauth-scopes`. `allows` says whether a granted scope set covers it: every
 * collection and action of a `repo:` scope, every method of an `rpc:` scope, every type of a
 * `blob:` scope. The granted set is read through `ScopePermissionsTransition`, so that
 * `transition:generic` (what most sessions hold today) grants repo, blob and non-chat rpc
 * permissions, as the PDS itself decides.
 * @internal
 */
export interface RequiredScope {
  /** The scope, normalized (the form the authorization server compares). */
  readonly scope: string;
  allows(granted: ScopePermissionsTransition): boolean;
}

/** RFC 6749 §3.3 scope-token: printable ASCII without space, `"` and `\`. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,1024}$/;

/**
 * Parses a scope a route requires; throws a `TypeError` that says what to write instead.
 * @internal
 */
export function parseRequiredScope(value: unknown, where: string): RequiredScope {
  if (typeof value !== 'string' || !SCOPE_TOKEN.test(value)) {
    throw new TypeError(
      `${where}: each scope must be one AT Protocol OAuth scope without spaces, such as 'repo:app.bsky.feed.post?action=create'.`,
    );
  }
  const scope = normalizeAtprotoOauthScopeValue(value);
  if (scope === null) {
    throw new TypeError(
      `${where}: "${value}" is not an AT Protocol OAuth scope this version understands ` +
        `(repo:, rpc:, blob:, account:, identity: or transition:…).`,
    );
  }
  if (scope === 'atproto') return { scope, allows: () => true };
  if (scope === 'transition:email') {
    // What the PDS grants for it: reading the account's email, which `account:email` also
    // grants.
    return { scope, allows: (granted) => granted.allowsAccount({ attr: 'email', action: 'read' }) };
  }
  if (isStaticScopeValue(scope)) return { scope, allows: (granted) => granted.scopes.has(scope) };
  const repo = RepoPermission.fromString(scope);
  if (repo) {
    return {
      scope,
      allows: (granted) =>
        repo.collection.every((collection) =>
          repo.action.every((action) => granted.allowsRepo({ collection, action })),
        ),
    };
  }
  const rpc = RpcPermission.fromString(scope);
  if (rpc) {
    return {
      scope,
      allows: (granted) =>
        rpc.lxm.every((lxm) =>
          lxm === '*'
            ? // Every method: transition:generic alone does not give chat.bsky.* (the PDS
              // refuses those without transition:chat.bsky), although allowsRpc says yes.
              ScopePermissions.prototype.allowsRpc.call(granted, { lxm, aud: rpc.aud }) ||
              (granted.hasTransitionGeneric && granted.hasTransitionChatBsky)
            : granted.allowsRpc({ lxm, aud: rpc.aud }),
        ),
    };
  }
  const blob = BlobPermission.fromString(scope);
  if (blob) {
    // allowsBlob takes a concrete type ("image/png") and says no to a pattern ("image/*"):
    // a required pattern is compared with the granted patterns instead.
    return {
      scope,
      allows: (granted) =>
        granted.hasTransitionGeneric ||
        blob.accept.every((accept) => grantedAccepts(granted).some((g) => acceptCovers(g, accept))),
    };
  }
  const account = AccountPermission.fromString(scope);
  if (account) {
    return {
      scope,
      allows: (granted) =>
        account.action.every((action) => granted.allowsAccount({ attr: account.attr, action })),
    };
  }
  const identity = IdentityPermission.fromString(scope);
  if (identity) {
    return { scope, allows: (granted) => granted.allowsIdentity({ attr: identity.attr }) };
  }
  if (IncludeScope.fromString(scope)) {
    // The authorization server expands a permission set into concrete scopes when it grants
    // it: a session never holds `include:…` itself, so a route cannot be checked against it.
    throw new TypeError(
      `${where}: "${value}" is a permission set, which the authorization server expands when it ` +
        `grants it: name the concrete scopes the route needs (repo:…, rpc:…) instead.`,
    );
  }
  // Unreachable while normalizeAtprotoOauthScopeValue knows the kinds above.
  throw new TypeError(`${where}: "${value}" cannot be checked by this version.`);
}

/** The MIME patterns of the granted `blob:` scopes. */
function grantedAccepts(granted: ScopePermissionsTransition): string[] {
  return [...granted.scopes].flatMap((t) => BlobPermission.fromString(t)?.accept ?? []);
}

/** Whether a granted accept pattern covers a required type or pattern. */
function acceptCovers(granted: string, required: string): boolean {
  if (granted === '*/*' || granted === required) return true;
  return (
    granted.endsWith('/*') && !required.startsWith('*') && required.startsWith(granted.slice(0, -1))
  );
}

/**
 * The required scopes that `granted` (a session's space-separated scope) does not cover.
 * @internal
 */
export function missingScopes(
  granted: string,
  required: readonly RequiredScope[],
): RequiredScope[] {
  const permissions = new ScopePermissionsTransition(granted);
  return required.filter((r) => !r.allows(permissions));
}

/**
 * The scopes the app declares in its client metadata (`scope` and `optionalScopes`): the
 * only ones a login may ask for, since the authorization server refuses any other. Keyed by
 * normalized form, valued by the form the metadata carries (which is what must be sent: the
 * server compares strings).
 * @internal
 */
export class DeclaredScopes {
  /** normalized → as declared */
  readonly #byNormal = new Map<string, string>();
  /** What every login asks for (the `scope` option's tokens). */
  readonly base: readonly string[];
  /** The permissions of the base scope, to tell which routes any login satisfies. */
  readonly #basePermissions: ScopePermissionsTransition;

  constructor(base: string, optional: readonly string[]) {
    this.base = splitScope(base);
    this.#basePermissions = new ScopePermissionsTransition(this.base);
    for (const token of [...this.base, ...optional]) {
      const normal = normalizeAtprotoOauthScopeValue(token) ?? token;
      if (!this.#byNormal.has(normal)) this.#byNormal.set(normal, token);
    }
  }

  /** Every declared scope, space-separated: the client metadata's `scope`. */
  get metadataScope(): string {
    return [...this.#byNormal.values()].join(' ');
  }

  /** The declared form of `token`, or `undefined` when the app does not declare it. */
  declared(token: string): string | undefined {
    return this.#byNormal.get(normalizeAtprotoOauthScopeValue(token) ?? token);
  }

  /**
   * The declared scope a login asks for to obtain `required`: itself, or a declared scope
   * that covers it (`repo:app.bsky.feed.post` covers `repo:app.bsky.feed.post?action=create`).
   * A permission set (`include:…`) covers nothing here: what it expands to is up to the
   * authorization server.
   */
  covering(required: RequiredScope): string | undefined {
    const literal = this.declared(required.scope);
    if (literal !== undefined) return literal;
    for (const token of this.#byNormal.values()) {
      if (required.allows(new ScopePermissionsTransition([token]))) return token;
    }
    return undefined;
  }

  /** Whether a login can obtain `required`: declared or covered, or covered by the base. */
  canObtain(required: RequiredScope): boolean {
    return this.covering(required) !== undefined || required.allows(this.#basePermissions);
  }

  /**
   * The scope of a login that asks for `requested` (declared scopes, space-separated) on top
   * of the base scope. Throws a `TypeError` naming the first scope not declared.
   */
  loginScope(requested: string): string {
    const tokens = new Set(this.base);
    for (const token of splitScope(requested)) {
      const declared = this.declared(token);
      if (declared === undefined) throw new TypeError(token);
      tokens.add(declared);
    }
    return [...tokens].join(' ');
  }

  /**
   * The scope a step-up login asks for: the base scope, what the session was granted (as far
   * as the app declares it: a permission set's expansion cannot be asked for by name), and
   * the missing scopes.
   */
  stepUpScope(granted: string, missing: readonly RequiredScope[]): string {
    const tokens = new Set(this.base);
    for (const token of splitScope(granted)) {
      const declared = this.declared(token);
      if (declared !== undefined) tokens.add(declared);
    }
    for (const required of missing) {
      const declared = this.covering(required);
      if (declared !== undefined) tokens.add(declared);
    }
    return [...tokens].join(' ');
  }
}

/** A space-separated scope as its distinct tokens. @internal */
export function splitScope(scope: string): string[] {
  return [...new Set(scope.split(' ').filter((t) => t.length > 0))];
}
