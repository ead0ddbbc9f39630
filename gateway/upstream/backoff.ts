// Exponential backoff with full jitter (so a fleet of gateways does not reconnect in lockstep).
//
// Links to a peer that comes back (upstreams, XMPP) opt into a short-outage cap: most outages are a broker restart
// or a network blip of seconds, and a plain exponential schedule has grown to ~16-30 s by the time such a peer is
// back (measured: an 8 s RabbitMQ stop was noticed 49 s later). So while an outage is young (`shortOutage.forMs`,
// default 60 s: a RabbitMQ restart alone takes 5-25 s) the delay grows min, 2*min, ... but never past
// `shortOutage.capMs` (default 1 s): the link is tried again at most ~1 s after the peer is back. Past that the
// outage is a long one and the delay grows from the cap by doubling up to maxMs, as before. The schedule starts
// over (from minMs, with a new young window) at reset(), which the owner calls once a link was up and usable.
// A refused attempt (stopped broker, ECONNREFUSED) costs next to nothing, so trying about once a second for a minute
// is cheap; attempts that hang are bounded by the attempt timeout of the link (link-state.ts).
// Without shortOutage (camera restarts, serial reopen) it is the plain exponential schedule.

export interface ShortOutage {
  /** Largest delay while the outage is young (never below minMs nor above maxMs). Default 1000. */
  capMs?: number
  /** How long an outage counts as young, from its first delay. Default 60000. */
  forMs?: number
}

export interface BackoffOptions {
  shortOutage?: ShortOutage
  /** Uniform in [0, 1): injected by tests. */
  random?: () => number
  /** Clock in ms: injected by tests. */
  now?: () => number
}

export const SHORT_OUTAGE_CAP_MS = 1000
export const SHORT_OUTAGE_FOR_MS = 60_000

export class Backoff {
  private attempt = 0
  /** Attempts since the young window of this outage ended. */
  private lateAttempt = 0
  /** When the current outage began (its first next()); null while there is none. */
  private outageStart: number | null = null
  private readonly random: () => number
  private readonly now: () => number
  private readonly youngCap: number | null
  private readonly youngFor: number

  constructor(private readonly minMs: number, private readonly maxMs: number, opts: BackoffOptions | (() => number) = {}) {
    const o: BackoffOptions = typeof opts === 'function' ? { random: opts } : opts
    this.random = o.random ?? Math.random
    this.now = o.now ?? Date.now
    this.youngCap = o.shortOutage ? Math.min(maxMs, Math.max(minMs, o.shortOutage.capMs ?? SHORT_OUTAGE_CAP_MS)) : null
    this.youngFor = o.shortOutage?.forMs ?? SHORT_OUTAGE_FOR_MS
  }

  /** The delay before the next attempt. */
  next(): number {
    const now = this.now()
    if (this.outageStart === null) this.outageStart = now
    let cap: number
    if (this.youngCap === null) {
      cap = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.attempt, 30))
    } else if (now - this.outageStart < this.youngFor) {
      cap = Math.min(this.youngCap, this.minMs * 2 ** Math.min(this.attempt, 30))
    } else {
      this.lateAttempt++
      cap = Math.min(this.maxMs, this.youngCap * 2 ** Math.min(this.lateAttempt, 30))
    }
    this.attempt++
    return Math.round(this.minMs / 2 + this.random() * (cap - this.minMs / 2))
  }

  /** How long the current outage has lasted (0 when there is none). */
  outageMs(): number { return this.outageStart === null ? 0 : Math.max(0, this.now() - this.outageStart) }

  /** The link was up: the next outage starts over from minMs. */
  reset(): void {
    this.attempt = 0
    this.lateAttempt = 0
    this.outageStart = null
  }
}
