// Backpressure for one browser: messages go straight out while the socket keeps up; while its buffer is above the
// high-water mark they wait here, and a newer message for the same series replaces (or merges into) the waiting one,
// so a slow browser gets the latest value per series instead of an ever-growing queue. Pure: the sink is injected.

export interface Sink {
  /** Bytes accepted by send() but not yet written to the network. */
  readonly bufferedAmount: number
  send(text: string): void
}

export type Merge = (older: object, newer: object) => object

export interface LiveQueueOptions {
  /** Above this many buffered bytes, messages wait (and coalesce) instead of being sent. */
  highWater: number
  /** Unkeyed messages (command results, channel messages) waiting at most: beyond it the browser is hopeless. */
  maxUnkeyed: number
}

export type PushResult = 'sent' | 'queued' | 'coalesced' | 'overflow'

export class LiveQueue {
  /** Insertion-ordered: a coalesced series keeps its place, so updates never overtake each other unfairly. */
  private readonly waiting = new Map<string, object>()
  private unkeyed = 0
  private serial = 0
  /** Totals for the benchmark and tests. */
  sentMessages = 0
  sentBytes = 0
  coalesced = 0

  constructor(private readonly sink: Sink, private readonly opts: LiveQueueOptions) {}

  get size(): number { return this.waiting.size }

  /**
   * `key` names the series (latest value wins); no key = must arrive (kept in order). `merge` combines a waiting
   * message with a newer one of the same series (e.g. metrics of two readings of one device).
   */
  push(msg: object, key?: string, merge?: Merge): PushResult {
    if (this.waiting.size === 0 && this.sink.bufferedAmount < this.opts.highWater) {
      this.write(msg)
      return 'sent'
    }
    if (key === undefined) {
      if (this.unkeyed >= this.opts.maxUnkeyed) return 'overflow'
      this.unkeyed++
      this.waiting.set(`#${this.serial++}`, msg)
      return 'queued'
    }
    const k = `k:${key}`
    const older = this.waiting.get(k)
    if (older === undefined) { this.waiting.set(k, msg); return 'queued' }
    this.waiting.set(k, merge ? merge(older, msg) : msg)
    this.coalesced++
    return 'coalesced'
  }

  /** Sends what waits, in order, while the sink stays below the high-water mark. Returns how many still wait. */
  flush(): number {
    for (const [k, msg] of this.waiting) {
      if (this.sink.bufferedAmount >= this.opts.highWater) break
      this.waiting.delete(k)
      if (k.startsWith('#')) this.unkeyed--
      this.write(msg)
    }
    return this.waiting.size
  }

  private write(msg: object): void {
    const text = JSON.stringify(msg)
    this.sentMessages++
    this.sentBytes += Buffer.byteLength(text)
    this.sink.send(text)
  }
}

/** Two readings of one device while the browser lags: the newest value of each metric survives. */
export const mergeReadings: Merge = (older, newer) => {
  const o = older as { metrics?: Record<string, unknown> }
  const n = newer as { metrics?: Record<string, unknown> }
  return { ...newer, metrics: { ...o.metrics, ...n.metrics } }
}

/** Recent refusals while the browser lags: keep the newest `cap` of them in one message. */
export function mergeLists(field: string, cap: number): Merge {
  return (older, newer) => {
    const a = (older as Record<string, unknown>)[field] as unknown[]
    const b = (newer as Record<string, unknown>)[field] as unknown[]
    return { ...newer, [field]: [...a, ...b].slice(-cap) }
  }
}
