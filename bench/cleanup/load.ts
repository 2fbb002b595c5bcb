/**
 * The live traffic of the cleanup benchmark (bench/cleanup/main.ts), a process of its own:
 * autocannon against one guarded URL at a fixed request rate for a fixed duration, then one
 * line of JSON on stdout (see {@link RateLoadResult}).
 *
 * Unlike the guard benchmark's load generator (bench/http/load.ts, as many requests as the
 * server takes), the rate is fixed below what the server can serve: at saturation every
 * latency is mostly queueing, and p99 would measure the queue rather than what cleanup
 * costs a request. Latencies go into a histogram of µs from autocannon's per-response
 * times (its own histogram keeps whole milliseconds; see bench/support/autocannon.ts).
 * @internal
 */
import { autocannonInMicros, loadGenerator, percentile } from '../support/autocannon.js';

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

loadGenerator(
  'cleanup bench load generator',
  async (request: RateLoadRequest): Promise<RateLoadResult> => {
    const { result, micros } = await autocannonInMicros({
      url: request.url,
      headers: request.headers,
      connections: request.connections,
      overallRate: request.rate,
      duration: request.duration,
    });
    return {
      ok: result['2xx'],
      failed: result.non2xx + result.errors + result.timeouts,
      seconds: result.duration,
      p50: percentile(micros, 50),
      p99: percentile(micros, 99),
      max: micros.count ? micros.max : 0,
    };
  },
);
