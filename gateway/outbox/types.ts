// The outbox seam: device links append, per-upstream forwarders claim and ack.
import type { Reading, RawReading } from '../readings.ts'

/** Settles readings appended with appendOwned: one object per connection instead of a closure per reading. */
export interface AppendOwner {
  /** `tag` is what appendOwned was given; `err` and `refused` as for append's done. */
  settled(tag: number, err: Error | null, refused?: string): void
}

export type DropReason = 'retention_bytes' | 'retention_age'

export interface UpstreamCursorStats {
  upstream: string
  /** Rows this upstream has not acked yet (pending + in flight). */
  lag: number
  inflight: number
  ackedUpto: number
}

export interface OutboxStats {
  depth: number
  bytes: number
  /** Age in ms of the oldest stored reading (0 when empty). */
  oldestAgeMs: number
  lastRowId: number
  fileBytes: number
  drops: Record<DropReason, number>
  appended: number
  commits: number
  /** Set while writes fail because the disk is full: acks are being withheld. */
  diskFull: boolean
  /** Rows an upstream rejected for good, kept in the dead-letter table (since start). */
  deadLettered: number
  /** Dead-lettered rows turned back into readings on request (since start). */
  deadRequeued: number
  lastError: string | null
  upstreams: UpstreamCursorStats[]
}

export interface ClaimedRow extends Reading {
  priority: boolean
}

export interface Outbox {
  /**
   * Decodes and durably appends; `done` runs once the commit holding the reading reached the disk (or failed).
   * `refused` names why a payload that does not decode was not stored (the device should still be acknowledged).
   */
  append(reading: RawReading, done: (err: Error | null, refused?: string) => void): void
  /** As append, settled through `owner` with `tag`: for links with many readings in flight (no closure per reading). */
  appendOwned(reading: RawReading, owner: AppendOwner, tag: number): void
  /** Up to `limit` rows this upstream has neither acked nor in flight, in row order. */
  claim(upstream: string, limit: number): Promise<ClaimedRow[]>
  ack(upstream: string, rowIds: number[]): void
  /** The upstream rejected this row for good: dead-letter it with the reason (counts as settled). */
  deadLetter(upstream: string, rowId: number, reason: string): void
  /** Unsettled rows of this upstream go back to pending: all (on disconnect) or the given ones (try again later). */
  release(upstream: string, rowIds?: number[]): void
  stats(): Promise<OutboxStats>
  /** Subscribe to "rows were committed" (forwarders wait on it when idle). Returns an unsubscribe. */
  onAppended(listener: (lastRowId: number) => void): () => void
}

export class OutboxError extends Error {
  constructor(message: string, readonly code: 'disk_full' | 'closed' | 'io') {
    super(message)
    this.name = 'OutboxError'
  }
}
