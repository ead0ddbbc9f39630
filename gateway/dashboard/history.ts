// Recent numeric points per device metric (ring buffers) and the latest reading per device, so a newly opened
// dashboard shows history at once. Pure; bounded in points per series and in series overall.

type Value = number | string | boolean

class Ring {
  private readonly ts: Float64Array
  private readonly vs: Float64Array
  private start = 0
  private len = 0
  constructor(private readonly cap: number) { this.ts = new Float64Array(cap); this.vs = new Float64Array(cap) }

  add(t: number, v: number): void {
    const i = (this.start + this.len) % this.cap
    this.ts[i] = t
    this.vs[i] = v
    if (this.len < this.cap) this.len++
    else this.start = (this.start + 1) % this.cap
  }

  /** [timestamps (s, as uPlot wants them), values], oldest first. */
  arrays(): [number[], number[]] {
    const t: number[] = []
    const v: number[] = []
    for (let k = 0; k < this.len; k++) {
      const i = (this.start + k) % this.cap
      t.push(this.ts[i]! / 1000)
      v.push(this.vs[i]!)
    }
    return [t, v]
  }
}

export interface Latest { ts: number; metrics: Record<string, Value> }

export class History {
  private readonly series = new Map<string, Map<string, Ring>>()
  private readonly latestByDevice = new Map<string, Latest>()
  private count = 0

  constructor(private readonly points: number, private readonly maxSeries = 2000, private readonly maxMetricsPerDevice = 16) {}

  add(device: string, ts: number, metrics: Record<string, Value>): void {
    const prev = this.latestByDevice.get(device)
    this.latestByDevice.set(device, { ts, metrics: { ...prev?.metrics, ...metrics } })
    let byMetric = this.series.get(device)
    for (const [name, v] of Object.entries(metrics)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) continue
      if (!byMetric) { byMetric = new Map(); this.series.set(device, byMetric) }
      let ring = byMetric.get(name)
      if (!ring) {
        if (this.count >= this.maxSeries || byMetric.size >= this.maxMetricsPerDevice) continue
        ring = new Ring(this.points)
        byMetric.set(name, ring)
        this.count++
      }
      ring.add(ts, v)
    }
  }

  latest(): Record<string, Latest> { return Object.fromEntries(this.latestByDevice) }

  /** device -> metric -> [timestamps in s, values]. */
  snapshot(): Record<string, Record<string, [number[], number[]]>> {
    const out: Record<string, Record<string, [number[], number[]]>> = {}
    for (const [device, byMetric] of this.series) {
      out[device] = {}
      for (const [name, ring] of byMetric) out[device][name] = ring.arrays()
    }
    return out
  }
}
