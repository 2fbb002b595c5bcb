import { Controller, ForbiddenException, Get, type ExecutionContext } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { Public } from '../decorators/public.decorator.js';
import { AtProtoAuthGuard } from './at-proto-auth.guard.js';

@Controller()
class Handlers {
  @Get('closed') closed() {}
  @Public() @Get('open') open() {}
}

function rpcContext(handler: keyof Handlers): ExecutionContext {
  return {
    getType: () => 'rpc',
    getHandler: () => Handlers.prototype[handler],
    getClass: () => Handlers,
  } as unknown as ExecutionContext;
}

describe('AtProtoAuthGuard outside HTTP', () => {
  const guard = new AtProtoAuthGuard(
    new Reflector(),
    undefined as never,
    undefined as never,
    { credentialsAllow: ['cookie', 'bearer'] } as never,
    undefined as never,
    undefined as never,
  );

  it('fails closed: a non-HTTP handler is refused unless it is @Public()', async () => {
    // Nest awaits what canActivate returns or throws alike.
    await expect(
      Promise.resolve().then(() => guard.canActivate(rpcContext('closed'))),
    ).rejects.toBeInstanceOf(ForbiddenException);
    await expect(Promise.resolve().then(() => guard.canActivate(rpcContext('open')))).resolves.toBe(
      true,
    );
  });
});
