// An in-process outbox for the upstream contract: a small working store (rows, one cursor per upstream, in flight,
// acked, dead-lettered) behind the Outbox interface the Forwarder uses. Not a mock: it answers like the SQLite outbox
// (claims in row order, release puts rows back to pending), and it records what a bug would get wrong: a row settled
// twice, a settle for a row that is not in flight, and the most rows ever in flight at once.
import type { AppendOwner, ClaimedRow, Outbox, OutboxStats } from '../../gateway/outbox/types.ts'
import type { RawReading } from '../../gateway/readings.ts'
import { messageId } from '../../gateway/readings.ts'

export interface Settlement { rowId: number; outcome: 'accepted' | 'rejected'; reason?: string; at: number }

export class MemoryOutbox implements Outbox {
  readonly rows: ClaimedRow[] = []
  private readonly seqs = new Map<string, number>()
  readonly inflight = new Set<number>()
  /** Every ack and dead-letter, in order (a row appearing twice is a double settle). */
  readonly settlements: Settlement[] = []
  private readonly done = new Set<number>()
  /** How often each row was handed out by claim(). */
  readonly claims = new Map<number, number>()
  /** Settles for rows that were not in flight (e.g. an old link's late answer after the release). */
  readonly strays: { rowId: number; op: string }[] = []
  maxInflight = 0
  releases = 0
  private readonly listeners = new Set<(lastRowId: number) => void>()

  constructor(readonly upstream: string, readonly gatewayId = 'ct') {}

  /** Appends `n` JSON readings of `device` (what the outbox worker would have committed) and wakes the forwarder. */
  add(device: string, n: number): ClaimedRow[] {
    const out: ClaimedRow[] = []
    for (let i = 0; i < n; i++) out.push(this.store(device, Buffer.from(JSON.stringify({ v: this.rows.length + 1 }))))
    for (const l of this.listeners) l(this.rows.length)
    return out
  }

  append(reading: RawReading, done: (err: Error | null, refused?: string) => void): void {
    this.store(reading.device, reading.payload)
    setImmediate(() => { done(null); for (const l of this.listeners) l(this.rows.length) })
  }

  appendOwned(reading: RawReading, owner: AppendOwner, tag: number): void {
    this.append(reading, (err, refused) => owner.settled(tag, err, refused))
  }

  async claim(upstream: string, limit: number): Promise<ClaimedRow[]> {
    this.check(upstream)
    const out: ClaimedRow[] = []
    for (const r of this.rows) {
      if (out.length >= limit) break
      if (this.done.has(r.rowId) || this.inflight.has(r.rowId)) continue
      this.inflight.add(r.rowId)
      this.claims.set(r.rowId, (this.claims.get(r.rowId) ?? 0) + 1)
      out.push(r)
    }
    this.maxInflight = Math.max(this.maxInflight, this.inflight.size)
    return out
  }

  ack(upstream: string, rowIds: number[]): void {
    this.check(upstream)
    for (const id of rowIds) this.settle(id, 'accepted', 'ack')
  }

  deadLetter(upstream: string, rowId: number, reason: string): void {
    this.check(upstream)
    this.settle(rowId, 'rejected', 'deadLetter', reason)
  }

  release(upstream: string, rowIds?: number[]): void {
    this.check(upstream)
    this.releases++
    for (const id of rowIds ?? [...this.inflight]) this.inflight.delete(id)
  }

  async stats(): Promise<OutboxStats> {
    const pending = this.rows.filter((r) => !this.done.has(r.rowId)).length
    return {
      depth: pending, bytes: 0, oldestAgeMs: 0, lastRowId: this.rows.length, fileBytes: 0,
      drops: { retention_bytes: 0, retention_age: 0 }, appended: this.rows.length, commits: this.rows.length, diskFull: false,
      deadLettered: this.settlements.filter((s) => s.outcome === 'rejected').length, deadRequeued: 0, lastError: null,
      upstreams: [{ upstream: this.upstream, lag: pending, inflight: this.inflight.size, ackedUpto: 0 }],
    }
  }

  onAppended(listener: (lastRowId: number) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** Settlements of one row (exactly one is the contract). */
  settledOf(rowId: number): Settlement[] { return this.settlements.filter((s) => s.rowId === rowId) }
  acked(rowId: number): boolean { return this.settlements.some((s) => s.rowId === rowId && s.outcome === 'accepted') }
  /** Rows settled more than once. */
  doubles(): number[] {
    const seen = new Map<number, number>()
    for (const s of this.settlements) seen.set(s.rowId, (seen.get(s.rowId) ?? 0) + 1)
    return [...seen].filter(([, n]) => n > 1).map(([id]) => id)
  }

  private settle(rowId: number, outcome: 'accepted' | 'rejected', op: string, reason?: string): void {
    if (!this.inflight.has(rowId)) this.strays.push({ rowId, op })
    this.inflight.delete(rowId)
    this.done.add(rowId)
    this.settlements.push({ rowId, outcome, ...(reason !== undefined ? { reason } : {}), at: Date.now() })
  }

  private store(device: string, payload: Uint8Array): ClaimedRow {
    const seq = (this.seqs.get(device) ?? 0) + 1
    this.seqs.set(device, seq)
    const rowId = this.rows.length + 1
    const now = Date.now()
    const row: ClaimedRow = {
      rowId, device, seq, deviceSeq: null, ts: now, receivedAt: now, kind: 'json', link: 'mqtt',
      payload: Buffer.from(payload).toString('utf8'), msgId: messageId(this.gatewayId, device, seq), priority: false,
    }
    this.rows.push(row)
    return row
  }

  private check(upstream: string): void {
    if (upstream !== this.upstream) throw new Error(`unknown upstream "${upstream}" (this outbox has "${this.upstream}")`)
  }
}
