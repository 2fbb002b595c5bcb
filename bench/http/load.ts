/**
 * The load generator of the HTTP benchmark (docs/benchmarks.md), a process of its own
 * (pinned to another core than the server by main.ts): autocannon against one URL for a
 * fixed duration, then one line of JSON on stdout (see {@link LoadResult}).
 *
 * Latencies are taken from autocannon's per-response times (ms with sub-ms precision) into
 * a histogram of µs: autocannon's own histogram keeps whole milliseconds, too coarse for
 * responses of a few ms.
 * @internal
 */
import { createHistogram } from 'node:perf_hooks';
import autocannon from 'autocannon';

/** @internal */
export interface LoadRequest {
  url: string;
  headers: Record<string, string>;
  connections: number;
  /** Seconds. */
  duration: number;
}

/** @internal */
export interface LoadResult {
  /** 2xx responses. */
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Seconds actually spent. */
  seconds: number;
  /** 2xx responses per second. */
  rps: number;
  /** µs */
  p50: number;
  p99: number;
}

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2] ?? '') as LoadRequest;
  const histogram = createHistogram();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: request.url,
        headers: request.headers,
        connections: request.connections,
        duration: request.duration,
        pipelining: 1,
      },
      (error, result) => (error ? reject(error) : resolve(result)),
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) {
        histogram.record(Math.max(1, Math.round(responseTime * 1000)));
      }
    });
  });
  const ok = result['2xx'];
  const out: LoadResult = {
    ok,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    seconds: result.duration,
    rps: ok / result.duration,
    p50: histogram.count ? histogram.percentile(50) : 0,
    p99: histogram.count ? histogram.percentile(99) : 0,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((error: unknown) => {
  console.error('bench load generator failed:', error);
  process.exit(1);
});
