import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { ModulesContainer } from '@nestjs/core';
import { AT_PROTO_OAUTH_SCOPES_KEY, AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import { AtProtoConfigError } from '../errors/at-proto-config.error.js';
import { controllerMethods } from '../http/controller-methods.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';
import type { RequiredScope } from './oauth-scopes.js';

/**
 * Fails the boot when a route's `@AtProtoScope()` names a scope no login can obtain: one
 * the client metadata does not declare (the module's `optionalScopes`) and the `scope`
 * option does not cover. Such a route could never be reached: the authorization server
 * refuses to grant a scope the metadata does not declare.
 * @internal
 */
@Injectable()
export class ScopeRoutesCheck implements OnModuleInit {
  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    private readonly modules: ModulesContainer,
  ) {}

  onModuleInit(): void {
    const problems: string[] = [];
    const declared = this.options.declaredScopes;
    for (const { cls, name, fn } of controllerMethods(this.modules)) {
      const required = [cls, fn].flatMap(
        (t) => (Reflect.getMetadata(AT_PROTO_OAUTH_SCOPES_KEY, t) ?? []) as RequiredScope[],
      );
      for (const scope of required) {
        if (declared.canObtain(scope)) continue;
        problems.push(
          `@AtProtoScope('${scope.scope}') on ${cls.name}.${name}: add '${scope.scope}' to optionalScopes ` +
            '(every scope a login may ask for must be declared in the client metadata)',
        );
      }
    }
    if (problems.length > 0) {
      throw new AtProtoConfigError([...new Set(problems)], 'AtProtoModule optionalScopes');
    }
  }
}
