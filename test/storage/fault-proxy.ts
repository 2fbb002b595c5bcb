import { createServer, type Server, Socket } from 'node:net';

/** How {@link CuttingProxy} cuts the connection that sends a matching statement. */
export type CutMode =
  /** Forward the statement, wait for the server's reply, drop the reply and cut: the
   *  statement ran (and, in autocommit, committed), the client sees a lost connection. */
  | 'after-reply'
  /** Run `beforeCut`, then cut without forwarding: the statement never ran. */
  | 'before-request';

interface Armed {
  pattern: RegExp;
  mode: CutMode;
  beforeCut?: () => Promise<void>;
  done: (statement: string) => void;
  failed: (error: unknown) => void;
}

/**
 * A TCP proxy on loopback in front of a database server that can cut one client
 * connection at a chosen point of one statement, so that tests can lose a connection
 * right after a write committed (the reply never reaches the driver) or right before it
 * reached the server. Everything else is forwarded byte for byte.
 */
export class CuttingProxy {
  #server: Server;
  #sockets = new Set<Socket>();
  #armed: Armed | undefined;

  private constructor(
    server: Server,
    readonly port: number,
  ) {
    this.#server = server;
  }

  static async start(target: { host: string; port: number }): Promise<CuttingProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const proxy = new CuttingProxy(server, (server.address() as { port: number }).port);
    server.on('connection', (client) => proxy.#handle(client, target));
    return proxy;
  }

  /**
   * Arms one cut: the next client packet whose text matches `pattern` is cut as `mode`
   * says. Resolves with the matched packet's text (latin1) once the connection is cut.
   */
  cutNext(pattern: RegExp, mode: CutMode, beforeCut?: () => Promise<void>): Promise<string> {
    return new Promise((done, failed) => {
      this.#armed = { pattern, mode, beforeCut, done, failed };
    });
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #handle(client: Socket, target: { host: string; port: number }): void {
    const upstream = new Socket();
    this.#sockets.add(client).add(upstream);
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    let swallowReply: ((statement: string) => void) | undefined;
    let statement = '';
    client.pause();
    upstream.connect(target.port, target.host, () => client.resume());
    client.on('data', (chunk) => {
      const armed = this.#armed;
      const text = chunk.toString('latin1');
      if (armed && armed.pattern.test(text)) {
        this.#armed = undefined;
        statement = text;
        if (armed.mode === 'after-reply') {
          swallowReply = armed.done;
          upstream.write(chunk);
        } else {
          client.pause();
          void (armed.beforeCut ?? (async () => undefined))().then(
            () => {
              cut();
              armed.done(text);
            },
            (error: unknown) => {
              cut();
              armed.failed(error);
            },
          );
        }
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (swallowReply) {
        const done = swallowReply;
        swallowReply = undefined;
        cut();
        done(statement);
        return;
      }
      client.write(chunk);
    });
  }
}
