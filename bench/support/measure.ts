import { fmt, median, table } from './report.js';

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

/** Per comparison label, per concurrency, per variant id: one result per round. */
export type Results = Record<string, Record<number, Record<string, RoundResult[]>>>;

/**
 * The results table of an in-process benchmark: per comparison, its baseline and each other
 * variant at each concurrency, p50 and p99 (median over the rounds) with their ratio to the
 * baseline of the same round (median, least–most), and throughput.
 */
export function ratioTable(
  results: Results,
  comparisons: ReadonlyArray<{ label: string; baseline: Variant; subjects: readonly Variant[] }>,
  concurrency: readonly number[],
  { ratioDigits = 2, latencyDigits = 0 }: { ratioDigits?: number; latencyDigits?: number } = {},
): string {
  const digits = ratioDigits;
  const rows: string[][] = [
    [
      'comparison',
      'variant',
      'callers',
      'p50 µs',
      'p50 ratio (range)',
      'p99 µs',
      'p99 ratio (range)',
      'ops/s',
    ],
  ];
  const range = (xs: number[]) =>
    `**${fmt(median(xs), digits)}×** (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`;
  for (const c of comparisons) {
    for (const v of [c.baseline, ...c.subjects]) {
      for (const n of concurrency) {
        const base = results[c.label]![n]![c.baseline.id]!;
        const own = results[c.label]![n]![v.id]!;
        const isBase = v === c.baseline;
        rows.push([
          c.label,
          isBase ? `${v.id} (baseline)` : v.id,
          String(n),
          fmt(median(own.map((x) => x.p50)), latencyDigits),
          isBase ? '1' : range(own.map((x, i) => x.p50 / base[i]!.p50)),
          fmt(median(own.map((x) => x.p99)), latencyDigits),
          isBase ? '1' : range(own.map((x, i) => x.p99 / base[i]!.p99)),
          fmt(median(own.map((x) => x.opsPerS))),
        ]);
      }
    }
  }
  return table(rows);
}
