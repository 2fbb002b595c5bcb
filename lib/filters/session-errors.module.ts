import { Logger, Module, type NestModule } from '@nestjs/common';
import { EXCEPTION_FILTERS_METADATA } from '@nestjs/common/constants.js';
import { ApplicationConfig, ModuleRef, ModulesContainer } from '@nestjs/core';
import { AppSessionService } from '../session/app-session.service.js';
import { AtProtoExceptionFilter } from './at-proto-exception.filter.js';
import { AtProtoSessionErrorInterceptor } from './at-proto-session-error.interceptor.js';

/**
 * Decides, once per app, how session errors that escape handlers are answered:
 * - the app has no exception filter of its own: by the module's `AtProtoExceptionFilter`
 *   alone, which costs nothing until an error is thrown;
 * - it has one (global, `APP_FILTER`, or on a controller or method): also by
 *   `AtProtoSessionErrorInterceptor`, registered globally, which hands those filters the
 *   `HttpException` they would have got before (a filter of the app may be tried before the
 *   module's, or expect an `HttpException`). Interceptors cost every route Nest's
 *   interceptor pipeline, so only apps that need it pay it.
 *
 * Why a module's `configure()`: it is the one hook that runs after the app's
 * `useGlobalFilters()` (called before `listen()`/`init()`) and before Nest builds its routes,
 * which read the global interceptors once.
 * @internal
 */
@Module({})
export class AtProtoSessionErrorsModule implements NestModule {
  readonly #logger = new Logger('AtProtoAuth');

  constructor(
    private readonly config: ApplicationConfig,
    private readonly modules: ModulesContainer,
    private readonly moduleRef: ModuleRef,
  ) {}

  configure(): void {
    if (!this.#appHasFilters()) return;
    const appSessions = this.moduleRef.get(AppSessionService, { strict: false });
    this.config.addGlobalInterceptor(new AtProtoSessionErrorInterceptor(appSessions));
    this.#logger.log(
      'The app has exception filters of its own: session errors are mapped by an interceptor ' +
        'before they reach them.',
    );
  }

  /** Whether any exception filter other than the module's can see a route's errors. */
  #appHasFilters(): boolean {
    const others = this.config
      .getGlobalFilters()
      .filter((filter) => !(filter instanceof AtProtoExceptionFilter));
    if (others.length > 0 || this.config.getGlobalRequestFilters().length > 0) return true;
    for (const module of this.modules.values()) {
      for (const wrapper of module.controllers.values()) {
        const type = wrapper.metatype as (new (...args: never[]) => unknown) | null;
        if (typeof type === 'function' && hasFilters(type)) return true;
      }
    }
    return false;
  }
}

/** Filters on a controller class or on any of its (inherited) methods. */
function hasFilters(type: new (...args: never[]) => unknown): boolean {
  const declared = (target: object) =>
    ((Reflect.getMetadata(EXCEPTION_FILTERS_METADATA, target) as unknown[] | undefined)?.length ??
      0) > 0;
  if (declared(type)) return true;
  for (let proto = type.prototype as object | null; proto && proto !== Object.prototype;) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      const value = Object.getOwnPropertyDescriptor(proto, name)?.value as unknown;
      if (name !== 'constructor' && typeof value === 'function' && declared(value)) return true;
    }
    proto = Object.getPrototypeOf(proto) as object | null;
  }
  return false;
}
