import { createServer, type Server, Socket } from 'node:net';

interface Link {
  client: Socket;
  upstream: Socket;
  /** Sent SUBSCRIBE: a Redis subscriber connection. */
  subscriber: boolean;
  /** Forwards nothing any more (a network partition that no side notices). */
  blackholed: boolean;
}

/**
 * A TCP proxy on loopback in front of a Redis server, which a test drives to fail the
 * connections that go through it the way networks fail:
 * - {@link blackhole}: bytes stop flowing both ways on every connection, open or new, and
 *   nobody is told (a partition, a half-open socket);
 * - {@link cutSubscribers}: connections in subscriber mode are closed, and new ones as soon
 *   as they subscribe (the subscriber is down, the rest of the instance's Redis works);
 * - {@link pass}: back to forwarding; blackholed connections are closed (their streams lost
 *   bytes, as after a partition: the peers would reset them).
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #links = new Set<Link>();
  #blackhole = false;
  #cutSubscribers = false;
  /** Connections accepted so far. */
  accepted = 0;

  private constructor(
    server: Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {
    this.#server = server;
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const proxy = new TcpProxy(server, (server.address() as { port: number }).port, target);
    server.on('connection', (client) => proxy.#handle(client));
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  blackhole(): void {
    this.#blackhole = true;
    for (const link of this.#links) link.blackholed = true;
  }

  cutSubscribers(): void {
    this.#cutSubscribers = true;
    for (const link of this.#links) if (link.subscriber) this.#close(link);
  }

  pass(): void {
    this.#blackhole = false;
    this.#cutSubscribers = false;
    for (const link of this.#links) if (link.blackholed) this.#close(link);
  }

  async close(): Promise<void> {
    for (const link of this.#links) this.#close(link);
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #close(link: Link): void {
    link.client.destroy();
    link.upstream.destroy();
    this.#links.delete(link);
  }

  #handle(client: Socket): void {
    this.accepted++;
    const upstream = new Socket();
    const link: Link = { client, upstream, subscriber: false, blackholed: this.#blackhole };
    this.#links.add(link);
    client.on('close', () => this.#close(link));
    upstream.on('close', () => this.#close(link));
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    client.pause();
    upstream.connect(this.target.port, this.target.host, () => client.resume());
    client.on('data', (chunk: Buffer) => {
      if (link.blackholed) return;
      if (/\bsubscribe\b/i.test(chunk.toString('latin1'))) {
        link.subscriber = true;
        if (this.#cutSubscribers) {
          this.#close(link);
          return;
        }
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!link.blackholed) client.write(chunk);
    });
  }
}
