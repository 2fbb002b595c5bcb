import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { AT_PROTO_OPTIONS } from '../at-proto.constants.js';
import type { ResolvedAtProtoOptions } from '../options/resolved-options.js';

/** Where a did:web document lives (did:web method spec). */
const PATH = '/.well-known/did.json';

/**
 * Serves `serviceAuth.didDocument` at `/.well-known/did.json`. Registered on the HTTP
 * adapter itself, not as a controller: a did:web document lives at the host's root, and a
 * controller's path would take `routePrefix` and the app's global prefix. Nest has already
 * mapped the app's routes when module hooks run, and adds its 404 handler after them.
 * @internal
 */
@Injectable()
export class ServiceDidDocumentRoute implements OnModuleInit {
  constructor(
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  onModuleInit(): void {
    const doc = this.options.serviceAuth.didDocument;
    // Typed as always present, but absent in a context without HTTP.
    const adapter = this.adapterHost.httpAdapter as HttpAdapterHost['httpAdapter'] | undefined;
    if (!doc || !adapter) return;
    const body = JSON.stringify(doc);
    adapter.get(
      PATH,
      (
        _req: unknown,
        res: { setHeader(n: string, v: string): void; end(b: string): void; statusCode: number },
      ) => {
        res.statusCode = 200;
        res.setHeader('content-type', 'application/did+json');
        res.setHeader('cache-control', 'public, max-age=300');
        res.end(body);
      },
    );
  }
}
