// When a device link's port is tried again: after a backoff delay, counted, and with a run of failed tries
// reported once (the first failure is news; repeating it every few seconds while a board is unplugged is not).
import { Backoff } from '../gateway/upstream/backoff.ts'

export class Reopener {
  /** Tries made after the first open (the links report it as `reopens`). */
  count = 0
  private timer: NodeJS.Timeout | null = null
  private failures = 0
  private readonly backoff: Backoff

  /** `isStopped`: the link is stopped or paused, so nothing is scheduled. */
  constructor(minMs: number, maxMs: number, private readonly tryOpen: () => void, private readonly isStopped: () => boolean) {
    this.backoff = new Backoff(minMs, maxMs)
  }

  /** An open worked: the next failure is news again, and the backoff starts over. */
  opened(): void {
    this.failures = 0
    this.backoff.reset()
  }

  /** An open failed: the next try is scheduled. `first`: the first failure since the last success (warn about it). */
  failed(): { delayMs: number; first: boolean } {
    const delayMs = this.backoff.next()
    const first = this.failures++ === 0
    this.schedule(delayMs)
    return { delayMs, first }
  }

  /** The open port was lost: tried again after the backoff delay. */
  lost(): void {
    this.schedule(this.backoff.next())
  }

  /** Stopping or pausing: a scheduled try is dropped. */
  cancel(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }

  /** Resuming: the first try after a pause is not delayed by the failures before it. */
  reset(): void {
    this.backoff.reset()
  }

  private schedule(delayMs: number): void {
    if (this.isStopped() || this.timer) return
    this.timer = setTimeout(() => { this.timer = null; this.count++; this.tryOpen() }, delayMs)
    this.timer.unref()
  }
}
