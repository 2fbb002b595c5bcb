import type { ModulesContainer } from '@nestjs/core';

/** A method of one of the app's controllers. @internal */
export interface ControllerMethod {
  /** The controller class. */
  readonly cls: abstract new (...args: never[]) => unknown;
  /** The method's name. */
  readonly name: string;
  /** The method itself (where method decorators put their metadata). */
  readonly fn: object;
}

/**
 * Every method of every controller of the app (inherited ones included), for the boot-time
 * checks of route decorators.
 * @internal
 */
export function* controllerMethods(modules: ModulesContainer): Generator<ControllerMethod> {
  for (const module of modules.values()) {
    for (const wrapper of module.controllers.values()) {
      const cls = wrapper.metatype as ControllerMethod['cls'] | null | undefined;
      if (typeof cls !== 'function') continue;
      const seen = new Set<string>();
      for (
        let p = cls.prototype as object | null;
        p && p !== Object.prototype;
        p = Object.getPrototypeOf(p) as object | null
      ) {
        for (const name of Object.getOwnPropertyNames(p)) {
          if (name === 'constructor' || seen.has(name)) continue;
          seen.add(name);
          const fn = Object.getOwnPropertyDescriptor(p, name)?.value as unknown;
          if (typeof fn === 'function') yield { cls, name, fn };
        }
      }
    }
  }
}
