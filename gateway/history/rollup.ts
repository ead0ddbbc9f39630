// Pure history math: numeric metrics out of a stored payload, 1-minute buckets (min/sum/max/count), the bucket width
// for a requested number of points, and whether a range is answered from raw points or from rollups.

export const MINUTE_MS = 60_000

/** A bucket as stored: avg is sum / count, so buckets merge exactly (across flushes, restarts, out-of-order points). */
export interface Bucket { min: number; max: number; sum: number; count: number }

export function minuteOf(ts: number): number { return Math.floor(ts / MINUTE_MS) }

export function addToBucket(b: Bucket | undefined, v: number): Bucket {
  if (!b) return { min: v, max: v, sum: v, count: 1 }
  if (v < b.min) b.min = v
  if (v > b.max) b.max = v
  b.sum += v
  b.count++
  return b
}

export function mergeBuckets(a: Bucket, b: Bucket): Bucket {
  return { min: Math.min(a.min, b.min), max: Math.max(a.max, b.max), sum: a.sum + b.sum, count: a.count + b.count }
}

/**
 * The numeric metrics of a stored JSON payload (the outbox validated it: an object of number | string | boolean).
 * `ts` and `seq` are the envelope, not metrics; strings and booleans are not charted.
 */
export function numericMetrics(payload: string): [string, number][] {
  let obj: unknown
  try { obj = JSON.parse(payload) } catch { return [] }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return []
  const out: [string, number][] = []
  for (const k in obj as Record<string, unknown>) {
    if (k === 'ts' || k === 'seq') continue
    const v = (obj as Record<string, unknown>)[k]
    if (typeof v === 'number' && Number.isFinite(v)) out.push([k, v])
  }
  return out
}

/** Rollup bucket width (a whole number of minutes) so that [from, to] gives at most about `points` buckets. */
export function bucketMinutes(from: number, to: number, points: number): number {
  const minutes = Math.max(1, Math.ceil((to - from + 1) / MINUTE_MS))
  return Math.max(1, Math.ceil(minutes / Math.max(1, points)))
}

export type Tier = 'raw' | 'rollup'

/**
 * Raw points when the whole range lies inside the raw window and holds at most `points` of them (the chart can draw
 * every reading); otherwise rollups. `rawCount` is asked only when the window test passes (it costs a query).
 */
export function chooseTier(q: { from: number; now: number; rawWindowMs: number; points: number }, rawCount: () => number): Tier {
  if (q.from < q.now - q.rawWindowMs) return 'rollup'
  return rawCount() <= q.points ? 'raw' : 'rollup'
}
