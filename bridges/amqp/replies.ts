// Pure policy of the command-reply path (no rhea here): when a refused attach is worth a second try, and how often a
// failed reply is logged. The links themselves live in upstream.ts.

/**
 * RabbitMQ 3.10 declares the queue of a `/queue/<name>` target with the terminus' durability and ends the session with
 * `amqp:precondition-failed` when the queue exists with the other one. The gateway cannot know how the requester
 * declared its reply queue, so an attach refused that way (before it opened) is tried once more with the other
 * durability; anything else (not-found, invalid-field, unauthorized-access, a second refusal) is final.
 */
export function retryWithOtherDurability(condition: unknown, opened: boolean, retried: boolean): boolean {
  return !opened && !retried && condition === 'amqp:precondition-failed'
}

/**
 * Rate limit for "reply could not be delivered" warnings: a requester with a bad reply_to usually repeats it with
 * every command. At most one warning per address per window and `maxPerWindow` in all (unique addresses cannot flood
 * the log either); the rest are counted and reported with the next warning. The upstream counts every failure anyway.
 */
export class FailureLog {
  private windowStart = -Infinity
  private loggedInWindow = 0
  private suppressed = 0
  /** Last warning per address, oldest first (bounded). */
  private readonly last = new Map<string, number>()

  constructor(private readonly windowMs = 60_000, private readonly maxPerWindow = 5, private readonly maxKeys = 256) {}

  /** null: do not warn (counted as suppressed); otherwise warn, mentioning this many suppressed since the last one. */
  take(key: string, now: number): number | null {
    if (now - this.windowStart >= this.windowMs) { this.windowStart = now; this.loggedInWindow = 0 }
    const at = this.last.get(key)
    if ((at !== undefined && now - at < this.windowMs) || this.loggedInWindow >= this.maxPerWindow) {
      this.suppressed++
      return null
    }
    this.last.delete(key)
    this.last.set(key, now)
    if (this.last.size > this.maxKeys) this.last.delete(this.last.keys().next().value!)
    this.loggedInWindow++
    const s = this.suppressed
    this.suppressed = 0
    return s
  }
}
