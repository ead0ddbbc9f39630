// Rate limit for Home Assistant's birth message: each `<prefix>/status` `online` asks for a full republish, but a
// client publishing births in a loop must not make the gateway republish in one. At most one run per window; a
// request inside the window is remembered and runs once at its end (so a real HA restart right after another one is
// not missed), any further ones in the same window are dropped. The clock and timer are injectable for tests.

export interface BirthLimiterOptions {
  windowMs: number
  run: () => void
  now?: () => number
  setTimer?: (fn: () => void, ms: number) => { unref?: () => void }
  clearTimer?: (t: unknown) => void
}

export class BirthLimiter {
  private last = -Infinity
  private timer: unknown = null
  private closed = false
  /** Requests that did not start a run of their own (merged into a pending one, or dropped). */
  suppressed = 0

  constructor(private readonly o: BirthLimiterOptions) {}

  request(): 'now' | 'scheduled' | 'suppressed' {
    if (this.closed) return 'suppressed'
    const now = (this.o.now ?? Date.now)()
    if (this.timer === null && now - this.last >= this.o.windowMs) {
      this.fire(now)
      return 'now'
    }
    this.suppressed++
    if (this.timer !== null) return 'suppressed'
    const set = this.o.setTimer ?? ((fn: () => void, ms: number) => setTimeout(fn, ms))
    const t = set(() => { this.timer = null; if (!this.closed) this.fire((this.o.now ?? Date.now)()) }, Math.max(0, this.last + this.o.windowMs - now))
    t.unref?.()
    this.timer = t
    return 'scheduled'
  }

  close(): void {
    this.closed = true
    if (this.timer !== null) (this.o.clearTimer ?? ((x: unknown) => clearTimeout(x as NodeJS.Timeout)))(this.timer)
    this.timer = null
  }

  private fire(now: number): void {
    this.last = now
    this.o.run()
  }
}
