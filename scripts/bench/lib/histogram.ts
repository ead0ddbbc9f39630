/**
 * Mergeable log-linear latency histogram (HDR-like, ~0.8 % relative precision).
 *
 * perf_hooks.createHistogram cannot be merged across processes, and the load
 * generator may run as several processes, so this one serialises to a plain
 * number array. Values are recorded in integer microseconds.
 */

const SUB = 64; // half the sub-bucket count: values < 2*SUB are exact
const LINEAR = SUB * 2;
const MAX_SHIFT = 26; // covers up to ~2^33 us (hours); larger values are clamped
export const HISTOGRAM_SIZE = LINEAR + MAX_SHIFT * SUB;

function indexOf(us: number): number {
  const v = us < 0 ? 0 : Math.floor(us);
  if (v < LINEAR) return v;
  const msb = Math.floor(Math.log2(v));
  const shift = Math.min(msb - 6, MAX_SHIFT);
  const mantissa = Math.min(Math.floor(v / 2 ** shift), LINEAR - 1); // in [SUB, 2*SUB)
  return LINEAR + (shift - 1) * SUB + (mantissa - SUB);
}

/** Midpoint of the bucket, in microseconds. */
function valueOf(index: number): number {
  if (index < LINEAR) return index;
  const rel = index - LINEAR;
  const shift = Math.floor(rel / SUB) + 1;
  const mantissa = (rel % SUB) + SUB;
  const lo = mantissa * 2 ** shift;
  return lo + (2 ** shift - 1) / 2;
}

export interface HistogramSnapshot {
  counts: number[]; // sparse encoding: [index, count, index, count, ...]
  total: number;
  min: number;
  max: number;
  sum: number;
}

export class LatencyHistogram {
  private counts = new Float64Array(HISTOGRAM_SIZE);
  total = 0;
  min = Number.POSITIVE_INFINITY;
  max = 0;
  sum = 0;

  record(us: number): void {
    const i = indexOf(us);
    this.counts[i] = (this.counts[i] ?? 0) + 1;
    this.total++;
    this.sum += us;
    if (us < this.min) this.min = us;
    if (us > this.max) this.max = us;
  }

  reset(): void {
    this.counts.fill(0);
    this.total = 0;
    this.min = Number.POSITIVE_INFINITY;
    this.max = 0;
    this.sum = 0;
  }

  snapshot(): HistogramSnapshot {
    const counts: number[] = [];
    for (let i = 0; i < this.counts.length; i++) {
      const c = this.counts[i] ?? 0;
      if (c > 0) counts.push(i, c);
    }
    return { counts, total: this.total, min: this.min, max: this.max, sum: this.sum };
  }

  merge(s: HistogramSnapshot): void {
    for (let k = 0; k + 1 < s.counts.length; k += 2) {
      const i = s.counts[k] ?? 0;
      this.counts[i] = (this.counts[i] ?? 0) + (s.counts[k + 1] ?? 0);
    }
    this.total += s.total;
    this.sum += s.sum;
    if (s.total > 0) {
      if (s.min < this.min) this.min = s.min;
      if (s.max > this.max) this.max = s.max;
    }
  }

  /** Percentile (0..100) in microseconds, NaN when empty. */
  percentile(p: number): number {
    if (this.total === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * this.total));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i] ?? 0;
      if (seen >= rank) return Math.min(Math.max(valueOf(i), this.min), this.max);
    }
    return this.max;
  }

  mean(): number {
    return this.total === 0 ? Number.NaN : this.sum / this.total;
  }
}
