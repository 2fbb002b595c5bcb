/**
 * Latency of one in-process variant over a sequence of keys, at a concurrency: what the
 * in-process benchmarks (bench/miss, bench/service-auth) measure each round.
 */

/** One variant of a comparison: `run` does one operation on a key of the sequence. */
export interface Variant {
  id: string;
  run(key: string): Promise<unknown>;
}

/** One round of one variant: p50 and p99 latency (µs) and throughput. */
export interface RoundResult {
  p50: number;
  p99: number;
  opsPerS: number;
}

const percentile = (sorted: Float64Array, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

/**
 * Runs `variant` once per key, `concurrency` async callers taking the next key in turn, and
 * times each call.
 */
export async function measure(
  variant: Variant,
  keys: readonly string[],
  concurrency: number,
): Promise<RoundResult> {
  const latencies = new Float64Array(keys.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < keys.length; i = next++) {
      const t0 = performance.now();
      await variant.run(keys[i]!);
      latencies[i] = (performance.now() - t0) * 1000;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = performance.now() - t0;
  latencies.sort();
  return {
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    opsPerS: (keys.length * 1000) / elapsed,
  };
}
