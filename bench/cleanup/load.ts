/**
 * The live traffic of the cleanup benchmark (bench/cleanup/main.ts), a process of its own:
 * autocannon against one guarded URL at a fixed request rate for a fixed duration, then one
 * line of JSON on stdout (see {@link RateLoadResult}).
 *
 * Unlike the guard benchmark's load generator (bench/http/load.ts, as many requests as the
 * server takes), the rate is fixed below what the server can serve: at saturation every
 * latency is mostly queueing, and p99 would measure the queue rather than what cleanup
 * costs a request. Latencies go into a histogram of µs from autocannon's per-response
 * times (its own histogram keeps whole milliseconds).
 * @internal
 */
import { createHistogram } from 'node:perf_hooks';
import autocannon from 'autocannon';

/** @internal */
export interface RateLoadRequest {
  url: string;
  headers: Record<string, string>;
  connections: number;
  /** Requests per second over all connections. */
  rate: number;
  /** Seconds. */
  duration: number;
}

/** @internal */
export interface RateLoadResult {
  /** 2xx responses. */
  ok: number;
  /** Any other answer, errors and timeouts: the guard must answer every request 200. */
  failed: number;
  /** Seconds actually spent. */
  seconds: number;
  /** µs */
  p50: number;
  p99: number;
  max: number;
}

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2] ?? '') as RateLoadRequest;
  const histogram = createHistogram();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: request.url,
        headers: request.headers,
        connections: request.connections,
        overallRate: request.rate,
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
  const out: RateLoadResult = {
    ok: result['2xx'],
    failed: result.non2xx + result.errors + result.timeouts,
    seconds: result.duration,
    p50: histogram.count ? histogram.percentile(50) : 0,
    p99: histogram.count ? histogram.percentile(99) : 0,
    max: histogram.count ? histogram.max : 0,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((error: unknown) => {
  console.error('cleanup bench load generator failed:', error);
  process.exit(1);
});
