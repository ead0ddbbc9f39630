// Appends held while the disk is full: their readings stay in memory, unacknowledged, and are written as soon as a
// retry succeeds. Failing them at once closed every device's connection and made a reconnect storm (~290
// reconnects in 12 s); held, a device just waits for its ack. Pure bookkeeping; the engine does the writes.
import type { ReadingInput } from '../readings.ts'
import type { Refusal } from './protocol.ts'

export interface HeldBatch { ids: number[]; rows: ReadingInput[]; refused: Refusal[]; since: number; bytes: number }

/** Bytes of held payload beyond which new appends fail at once (each device's in-flight window bounds it first). */
export const HOLD_MAX_BYTES = 32 * 1024 * 1024

const rowBytes = (r: ReadingInput): number => (typeof r.payload === 'string' ? r.payload.length : r.payload.byteLength) + 64

export class HeldAppends {
  private batches: HeldBatch[] = []
  private bytes = 0

  /** holdMs: how long an append may wait before it fails (its device's connection then closes and it retries). */
  constructor(private readonly holdMs: number, private readonly maxBytes = HOLD_MAX_BYTES) {}

  get size(): number { return this.batches.length }
  get heldBytes(): number { return this.bytes }

  /** Holds a batch; false when the memory bound is reached (the caller fails it at once). */
  add(ids: number[], rows: ReadingInput[], refused: Refusal[], now: number): boolean {
    let bytes = 0
    for (const r of rows) bytes += rowBytes(r)
    if (this.batches.length > 0 && this.bytes + bytes > this.maxBytes) return false
    this.batches.push({ ids, rows, refused, since: now, bytes })
    this.bytes += bytes
    return true
  }

  /** Removes and returns the batches held longer than holdMs (oldest first). */
  expire(now: number): HeldBatch[] {
    let n = 0
    while (n < this.batches.length && now - this.batches[n]!.since >= this.holdMs) n++
    return this.take(n)
  }

  /** Removes and returns every held batch, in arrival order. */
  takeAll(): HeldBatch[] { return this.take(this.batches.length) }

  /** Every held batch merged into one write, in arrival order (without removing them). */
  merged(): { ids: number[]; rows: ReadingInput[]; refused: Refusal[] } {
    if (this.batches.length === 1) return this.batches[0]!
    const out = { ids: [] as number[], rows: [] as ReadingInput[], refused: [] as Refusal[] }
    for (const b of this.batches) { out.ids.push(...b.ids); for (const r of b.rows) out.rows.push(r); out.refused.push(...b.refused) }
    return out
  }

  private take(n: number): HeldBatch[] {
    const out = this.batches.splice(0, n)
    for (const b of out) this.bytes -= b.bytes
    return out
  }
}
