/**
 * The load generators' shared part (bench/http/load.ts, bench/cleanup/load.ts): autocannon
 * with latencies in µs, in a process that takes its request as JSON and prints one line of
 * JSON.
 * @internal
 */
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import autocannon from 'autocannon';

/**
 * Runs autocannon with `options` (one request per connection at a time). Latencies of 2xx
 * responses go into a histogram of µs from autocannon's per-response times (ms with sub-ms
 * precision): its own histogram keeps whole milliseconds, too coarse for responses of a few
 * ms.
 */
export async function autocannonInMicros(
  options: Omit<autocannon.Options, 'pipelining'>,
): Promise<{ result: autocannon.Result; micros: RecordableHistogram }> {
  const micros = createHistogram();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({ ...options, pipelining: 1 }, (error, result) =>
      error ? reject(error) : resolve(result),
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) {
        micros.record(Math.max(1, Math.round(responseTime * 1000)));
      }
    });
  });
  return { result, micros };
}

/** The `p`th percentile of `histogram`, or 0 when it is empty. */
export const percentile = (histogram: RecordableHistogram, p: number) =>
  histogram.count ? histogram.percentile(p) : 0;

/**
 * The body of a load generator process: its request is the JSON of its first argument, its
 * result one line of JSON on stdout; on an error it says `what` failed and exits with 1.
 */
export function loadGenerator<Request, Result>(
  what: string,
  measure: (request: Request) => Promise<Result>,
): void {
  const run = async () => measure(JSON.parse(process.argv[2] ?? '') as Request);
  run().then(
    (out) => process.stdout.write(`${JSON.stringify(out)}\n`),
    (error: unknown) => {
      console.error(`${what} failed:`, error);
      process.exit(1);
    },
  );
}
