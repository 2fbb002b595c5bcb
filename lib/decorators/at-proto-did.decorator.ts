import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { requestAuth } from './request-auth.util.js';

/**
 * Injects the DID of the signed-in user (`undefined` on a `@Public()` route without one).
 * Costs nothing: the guard already validated the app session.
 * @example me(\@AtProtoDid() did: string) { ... }
 * @publicApi
 */
export const AtProtoDid = createParamDecorator(
  (_: unknown, ctx: ExecutionContext): string | undefined => requestAuth(ctx, 'AtProtoDid')?.did,
);
