// The outbox worker's side of the history feed: every committed JSON reading goes to the history worker over a
// MessagePort of its own, gathered for a short while so one message carries many readings. It runs after the
// 'appended' message that releases the acks has been posted, so it never delays a PUBACK, and it does no disk work.
// A device reporting faster than minIntervalMs (by its readings' own times) is sampled: at most one reading per
// interval goes on (the outbox and the upstreams still get every one). Charts need no more, and parsing and
// writing every reading at tens of thousands a second cost the gateway 40 % of its saturation throughput here.
import type { MessagePort } from 'node:worker_threads'
import type { ReadingInput } from '../readings.ts'
import type { TapBatch } from './protocol.ts'

export class HistoryTap {
  private texts: string[] = []
  private dev: number[] = []
  private ts: number[] = []
  private ids: number[] = []
  private names = new Map<string, number>()
  private timer: NodeJS.Timeout | null = null
  /** Each device's last forwarded reading time (its `ts`): the sampling above. */
  private readonly lastTs = new Map<string, number>()
  /** Readings not forwarded by the sampling (since start). */
  sampledOut = 0

  constructor(private readonly port: MessagePort, private readonly minIntervalMs = 0, private readonly everyMs = 100, private readonly maxRows = 5000) {}

  /** The rows of one commit, whose row ids end at lastRowId (appendBatch assigns them consecutively). */
  add(rows: readonly ReadingInput[], lastRowId: number): void {
    let id = lastRowId - rows.length + 1
    for (const r of rows) {
      if (r.kind === 'json' && this.keep(r.device, r.ts)) {
        let k = this.names.get(r.device)
        if (k === undefined) { k = this.names.size; this.names.set(r.device, k) }
        this.texts.push(r.payload as string)
        this.dev.push(k)
        this.ts.push(r.ts)
        this.ids.push(id)
      }
      id++
    }
    if (this.texts.length >= this.maxRows) this.flush()
    else if (this.texts.length > 0 && !this.timer) this.timer = setTimeout(() => this.flush(), this.everyMs)
  }

  /** Out-of-order or backfilled times (older than the last one) always go on: they are history being filled in. */
  private keep(device: string, ts: number): boolean {
    if (this.minIntervalMs <= 0) return true
    const last = this.lastTs.get(device)
    if (last !== undefined && ts >= last && ts - last < this.minIntervalMs) { this.sampledOut++; return false }
    if (last === undefined && this.lastTs.size >= 100_000) this.lastTs.clear() // an open broker invents device names
    this.lastTs.set(device, ts)
    return true
  }

  flush(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null }
    if (this.texts.length === 0) return
    const dev = Uint32Array.from(this.dev)
    const ts = Float64Array.from(this.ts)
    const ids = Float64Array.from(this.ids)
    const m: TapBatch = { t: 'rows', names: [...this.names.keys()], dev, ts, ids, text: this.texts.join('\0') }
    this.texts = []; this.dev = []; this.ts = []; this.ids = []
    this.names = new Map()
    this.port.postMessage(m, [dev.buffer as ArrayBuffer, ts.buffer as ArrayBuffer, ids.buffer as ArrayBuffer])
  }

  close(): void {
    this.flush()
    this.port.close()
  }
}
