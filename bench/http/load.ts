/**
 * The load generator of the HTTP benchmark (docs/benchmarks.md), a process of its own
 * (pinned to another core than the server by main.ts): autocannon against one URL for a
 * fixed duration, then one line of JSON on stdout (see {@link LoadResult}).
 *
 * Latencies are taken from autocannon's per-response times (ms with sub-ms precision) into
 * a histogram of µs: autocannon's own histogram keeps whole milliseconds, too coarse for
 * responses of a few ms (see bench/support/autocannon.ts).
 * @internal
 */
import { autocannonInMicros, loadGenerator, percentile } from '../support/autocannon.js';

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

loadGenerator('bench load generator', async (request: LoadRequest): Promise<LoadResult> => {
  const { result, micros } = await autocannonInMicros({
    url: request.url,
    headers: request.headers,
    connections: request.connections,
    duration: request.duration,
  });
  const ok = result['2xx'];
  return {
    ok,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    seconds: result.duration,
    rps: ok / result.duration,
    p50: percentile(micros, 50),
    p99: percentile(micros, 99),
  };
});
