// What every upstream connector tracks about its link: up/down with since and last error, change listeners (the
// forwarder), and reconnecting with backoff: one clear log line per outage, repeats at debug.
//
// Reconnect schedule (backoff.ts): short-outage cap on. The first outage delay is minMs; the delays grow but stay at
// most ~1 s for the first 60 s of an outage, then grow to maxMs; once the link is up (the owner calls up() after the
// open/attach succeeded, i.e. the link is usable) the next outage starts over from minMs.
//
// Attempt timeouts: an attempt that hangs (TCP accepted but no AMQP open / CONNACK, e.g. a frozen broker or a proxy
// whose backend is gone) would otherwise sit out the whole configured connect timeout (10 s) and add it to the stall.
// Once a setup to this peer has succeeded, its duration is known: an attempt is abandoned after
// max(2 s, 10 x the last successful setup), doubled after each abandoned attempt since the link was last up (a peer
// that is slow because everyone reconnects at once is not hammered with ever-shorter tries), never more than the
// configured timeout. Before any success the configured timeout applies.
import type { Logger } from 'pino'
import type { UpstreamStatus } from './types.ts'
import { Backoff, type ShortOutage } from './backoff.ts'

/** An attempt is given at least this long once a setup time has been learned. */
export const ATTEMPT_TIMEOUT_FLOOR_MS = 2000
/** ...and this many times the last successful setup. */
export const ATTEMPT_TIMEOUT_FACTOR = 10

export interface LinkStateOptions {
  /** The young-outage cap of the reconnect schedule (backoff.ts); defaults apply when omitted. */
  shortOutage?: ShortOutage
  /** Injected by tests. */
  now?: () => number
  random?: () => number
}

export class LinkState {
  private state: UpstreamStatus = { connected: false, since: Date.now(), lastError: null }
  private readonly listeners: (() => void)[] = []
  private readonly backoff: Backoff
  private retry: NodeJS.Timeout | null = null
  private downLogged = false
  private readonly now: () => number
  /** When the current connection attempt began (null when none is known to be running). */
  private attemptStart: number | null = null
  /** How long the last successful setup (connect to up()) took; null until one succeeded. */
  private setupMs: number | null = null
  /** Attempts abandoned by their timeout since the link was last up. */
  private timeouts = 0

  constructor(private readonly log: Logger, private readonly fields: Record<string, unknown>, minMs: number, maxMs: number, opts: LinkStateOptions = {}) {
    this.now = opts.now ?? Date.now
    this.state.since = this.now()
    this.backoff = new Backoff(minMs, maxMs, { shortOutage: opts.shortOutage ?? {}, now: this.now, ...(opts.random ? { random: opts.random } : {}) })
  }

  get connected(): boolean { return this.state.connected }
  get lastError(): string | null { return this.state.lastError }
  status(): UpstreamStatus { return { ...this.state } }
  onChange(listener: () => void): void { this.listeners.push(listener) }

  /** Why the link is failing; shown in health until it is up again. */
  noteError(message: string): void { this.state.lastError = message }

  /**
   * A connection attempt starts now. Returns how long it may take until the link is up (up()) before the owner
   * abandons it: `maxMs` (the configured connect timeout) until a setup time is known, then see the file comment.
   */
  beginAttempt(maxMs: number): number {
    this.attemptStart = this.now()
    return this.attemptTimeoutMs(maxMs)
  }

  /** The timeout the next attempt gets (see beginAttempt). */
  attemptTimeoutMs(maxMs: number): number {
    if (this.setupMs === null) return maxMs
    const base = Math.max(ATTEMPT_TIMEOUT_FLOOR_MS, ATTEMPT_TIMEOUT_FACTOR * this.setupMs)
    return Math.min(maxMs, base * 2 ** Math.min(this.timeouts, 20))
  }

  /** The current attempt hit its timeout (call before down()): the next one gets twice as long. */
  attemptTimedOut(message: string): void {
    this.timeouts++
    this.attemptStart = null
    this.noteError(message)
  }

  /** How long the current outage has lasted, from its first retry delay (0 while up). */
  outageMs(): number { return this.backoff.outageMs() }

  /** The link is up and usable (connected, and opened/attached where the protocol has that). */
  up(): void {
    if (this.attemptStart !== null) this.setupMs = Math.max(0, this.now() - this.attemptStart)
    this.attemptStart = null
    this.timeouts = 0
    this.backoff.reset()
    this.downLogged = false
    this.set(true, null)
  }

  /** The link is gone: runs `reconnect` after a backoff delay (unless `closing`). */
  down(reconnect: () => void, closing: boolean): void {
    const wasUp = this.state.connected
    const err = this.state.lastError ?? 'connection closed'
    this.set(false, err)
    if (closing) return
    this.attemptStart = null
    const delay = this.backoff.next()
    const fields = { ...this.fields, err, retryInMs: delay, outageMs: this.backoff.outageMs() }
    if (wasUp) this.log.warn(fields, 'upstream link down: readings stay in the outbox')
    else if (!this.downLogged) this.log.error(fields, 'upstream connect failed: retrying with backoff, readings stay in the outbox')
    else this.log.debug(fields, 'upstream connect failed again')
    this.downLogged = true
    this.cancelRetry()
    this.retry = setTimeout(() => { this.retry = null; reconnect() }, delay)
  }

  cancelRetry(): void {
    if (this.retry) clearTimeout(this.retry)
    this.retry = null
  }

  /** Tells the listeners something changed (link state or credit). A failing listener is logged, never fatal. */
  emit(): void {
    for (const l of this.listeners) {
      try { l() } catch (err) { this.log.error({ err: (err as Error).message }, 'upstream listener failed') }
    }
  }

  private set(connected: boolean, lastError: string | null): void {
    if (connected !== this.state.connected) this.state = { connected, since: this.now(), lastError }
    else this.state.lastError = lastError
    this.emit()
  }
}
