// Bounds the log lines refusals write: one hostile client must not flood the log (100k malformed packets once
// wrote 18.6 MB). The first refusal of a (reason, key) is logged at once, exactly as before; repeats within a window
// become one summary line when it ends. Counting (Prometheus) stays with the caller, exact: this only limits lines.
import type { Logger } from 'pino'

/** The clock and timer, injectable for tests. */
export interface RefusalTimers {
  now(): number
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

export interface RefusalLogOptions {
  /** How long repeats are gathered into one summary line (default 10 s). */
  windowMs?: number
  /** Most (reason, key) pairs tracked at once (default 10,000); beyond it, new keys share one entry per reason. */
  maxTracked?: number
  timers?: RefusalTimers
}

/** The key of the shared entry new keys are counted under while the tracked pairs are at their cap. */
export const OVERFLOW_KEY = '*'

// Keys and details come from the wire (client ids, topics): clipped in memory, so the cap bounds bytes too.
const MAX_KEY = 256
const MAX_DETAIL = 512
// Reasons are the caller's constants; capped anyway so that no input grows the overflow map without bound.
const MAX_OVERFLOW_REASONS = 64

const realTimers: RefusalTimers = {
  // monotonic: window ends must not go backwards with the wall clock (the sweep relies on their order)
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
}

interface Entry { reason: string; key: string; until: number; count: number; detail: string }

const clip = (s: string, n: number): string => (s.length > n ? `${s.slice(0, n)}…` : s)

export class RefusalLog {
  private readonly windowMs: number
  private readonly maxTracked: number
  private readonly timers: RefusalTimers
  /** Insertion order is window-end order (every entry gets now + windowMs): the sweep stops at the first live one. */
  private readonly tracked = new Map<string, Entry>()
  private readonly overflow = new Map<string, Entry>()
  private timer: unknown = null

  constructor(private readonly log: Pick<Logger, 'warn'>, opts: RefusalLogOptions = {}) {
    this.windowMs = opts.windowMs ?? 10_000
    this.maxTracked = opts.maxTracked ?? 10_000
    this.timers = opts.timers ?? realTimers
  }

  /** Entries held (tracked pairs plus overflow entries): bounded by maxTracked + 65. */
  get size(): number { return this.tracked.size + this.overflow.size }

  /** `message`: the first line's text (default `refused: <detail>`); repeats are summed up under the reason. */
  note(reason: string, key: string, detail: string, ctx: Record<string, unknown> = {}, message = `refused: ${detail}`): void {
    const k = clip(key, MAX_KEY)
    const id = `${reason}\u0000${k}`
    const e = this.tracked.get(id)
    if (e) { e.count++; e.detail = clip(detail, MAX_DETAIL); return }
    if (this.tracked.size < this.maxTracked) {
      this.first(this.tracked, id, reason, reason, k, message, ctx)
      return
    }
    const r = this.overflow.has(reason) || this.overflow.size < MAX_OVERFLOW_REASONS ? reason : OVERFLOW_KEY
    const o = this.overflow.get(r)
    if (o) { o.count++; o.detail = clip(detail, MAX_DETAIL); return }
    this.first(this.overflow, r, reason, r, OVERFLOW_KEY, message, ctx)
  }

  /** Writes every pending summary and forgets all (for shutdown); the next refusal is logged at once again. */
  flush(): void {
    if (this.timer !== null) { this.timers.clearTimeout(this.timer); this.timer = null }
    for (const e of this.tracked.values()) if (e.count > 0) this.summary(e)
    for (const e of this.overflow.values()) if (e.count > 0) this.summary(e)
    this.tracked.clear()
    this.overflow.clear()
  }

  /** Today's line, and an entry that counts the repeats (entryReason: see MAX_OVERFLOW_REASONS). */
  private first(map: Map<string, Entry>, id: string, reason: string, entryReason: string, key: string, message: string, ctx: Record<string, unknown>): void {
    this.log.warn({ reason, ...ctx }, message)
    map.set(id, { reason: entryReason, key, until: this.timers.now() + this.windowMs, count: 0, detail: '' })
    // a new entry ends last: an armed timer already fires for an earlier one
    if (this.timer === null) this.arm()
  }

  private summary(e: Entry): void {
    this.log.warn({ reason: e.reason, key: e.key, count: e.count, detail: e.detail }, `refused ${e.count} more times: ${e.reason}`)
  }

  /** A window that saw repeats is summed up and starts again; a quiet one drops its entry. */
  private sweep(): void {
    this.timer = null
    const now = this.timers.now()
    for (const [id, e] of this.tracked) {
      if (e.until > now) break
      this.tracked.delete(id)
      if (e.count > 0) this.restart(this.tracked, id, e, now)
    }
    for (const [id, e] of this.overflow) {
      if (e.until > now) continue
      this.overflow.delete(id)
      if (e.count > 0) this.restart(this.overflow, id, e, now)
    }
    this.arm()
  }

  private restart(map: Map<string, Entry>, id: string, e: Entry, now: number): void {
    this.summary(e)
    e.count = 0
    e.until = now + this.windowMs
    map.set(id, e) // at the end: keeps the window-end order
  }

  private arm(): void {
    let next = Infinity
    for (const e of this.tracked.values()) { next = e.until; break }
    for (const e of this.overflow.values()) next = Math.min(next, e.until)
    if (next === Infinity) return
    this.timer = this.timers.setTimeout(() => this.sweep(), Math.max(0, next - this.timers.now()))
  }
}
