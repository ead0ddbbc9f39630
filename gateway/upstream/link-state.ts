// What every upstream connector tracks about its link: up/down with since and last error, change listeners (the
// forwarder), and reconnecting with backoff: one clear log line per outage, repeats at debug.
import type { Logger } from 'pino'
import type { UpstreamStatus } from './types.ts'
import { Backoff } from './backoff.ts'

export class LinkState {
  private state: UpstreamStatus = { connected: false, since: Date.now(), lastError: null }
  private readonly listeners: (() => void)[] = []
  private readonly backoff: Backoff
  private retry: NodeJS.Timeout | null = null
  private downLogged = false

  constructor(private readonly log: Logger, private readonly fields: Record<string, unknown>, minMs: number, maxMs: number) {
    this.backoff = new Backoff(minMs, maxMs)
  }

  get connected(): boolean { return this.state.connected }
  get lastError(): string | null { return this.state.lastError }
  status(): UpstreamStatus { return { ...this.state } }
  onChange(listener: () => void): void { this.listeners.push(listener) }

  /** Why the link is failing; shown in health until it is up again. */
  noteError(message: string): void { this.state.lastError = message }

  up(): void {
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
    const delay = this.backoff.next()
    const fields = { ...this.fields, err, retryInMs: delay }
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
    if (connected !== this.state.connected) this.state = { connected, since: Date.now(), lastError }
    else this.state.lastError = lastError
    this.emit()
  }
}
