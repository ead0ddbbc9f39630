// Login throttling shared by the dashboard (per client address) and the MQTT broker (per address and device id).
// Pure: no I/O, the clock is injected.
//
// Why begin() counts up front: the password hash is checked asynchronously, so a check-then-record throttle lets N
// parallel attempts all pass the check before the first failure is recorded. Here every attempt is counted as a
// failure the moment it begins, synchronously; only settle(true) takes it back (and clears the key).
//
// Per key: `budget` attempts, then the next attempt starts a lockout of baseLockMs. After a lockout ends the key gets
// one more attempt; failing again locks it for twice as long, up to maxLockMs. A key is forgotten windowMs after its
// last attempt or the end of its last lockout, whichever is later.

export interface ThrottleOptions {
  /** Free attempts per key before lockout (default 5). */
  budget?: number
  /** First lockout (default 30 s); each further one doubles. */
  baseLockMs?: number
  /** Lockout cap (default 15 min). */
  maxLockMs?: number
  /** How long failures are remembered (default 15 min). */
  windowMs?: number
  /** Keys remembered at most (default 10,000); the least recently touched go first. */
  maxKeys?: number
  now?: () => number
}

export type LoginAttempt =
  | { ok: true; settle(success: boolean): void }
  | {
    ok: false
    retryAfterMs: number
    /** True for the one attempt that started the lockout: log that one, not every refusal. */
    newLockout: boolean
    /** The keys that are locked. */
    lockedKeys: readonly string[]
  }

interface Entry {
  /** Attempts counted since the key was last cleared (or since its last lockout began). */
  attempts: number
  /** Lockouts so far: the next one lasts baseLockMs * 2^lockouts. */
  lockouts: number
  lockedUntil: number
  lastAttempt: number
}

export class LoginThrottle {
  private readonly budget: number
  private readonly baseLockMs: number
  private readonly maxLockMs: number
  private readonly windowMs: number
  private readonly maxKeys: number
  private readonly now: () => number
  // Two tables in least-recently-touched order (a touch re-inserts): keys that have been locked are evicted only once
  // no merely-counted key is left, so a flood of new addresses cannot push an attacker's lockout out.
  private readonly counted = new Map<string, Entry>()
  private readonly penalized = new Map<string, Entry>()

  constructor(opts: ThrottleOptions = {}) {
    this.budget = Math.max(1, Math.floor(opts.budget ?? 5))
    this.baseLockMs = Math.max(1, opts.baseLockMs ?? 30_000)
    this.maxLockMs = Math.max(this.baseLockMs, opts.maxLockMs ?? 15 * 60_000)
    this.windowMs = Math.max(1, opts.windowMs ?? 15 * 60_000)
    this.maxKeys = Math.max(1, Math.floor(opts.maxKeys ?? 10_000))
    this.now = opts.now ?? Date.now
  }

  /** Keys remembered (both tables). */
  get size(): number { return this.counted.size + this.penalized.size }

  /** Synchronous, BEFORE any hash is checked: counts the attempt against every key. Refused when any key is over its budget or locked. */
  begin(keys: readonly string[]): LoginAttempt {
    const t = this.now()
    const uniq = [...new Set(keys)]
    const entries = uniq.map((k) => this.current(k, t))
    const locked = uniq.filter((_k, i) => (entries[i]?.lockedUntil ?? 0) > t)
    if (locked.length > 0) {
      // Refused attempts are not counted (no hash is checked), but they keep the key fresh in the table.
      for (const k of locked) this.touch(k, entries[uniq.indexOf(k)]!)
      return { ok: false, retryAfterMs: this.retryAfter(entries, t), newLockout: false, lockedKeys: locked }
    }
    const spent = uniq.filter((_k, i) => (entries[i]?.attempts ?? 0) >= this.budget)
    if (spent.length > 0) {
      for (const k of spent) {
        const e = entries[uniq.indexOf(k)]!
        e.lockedUntil = t + Math.min(this.maxLockMs, this.baseLockMs * 2 ** e.lockouts)
        e.lockouts++
        // One attempt after the lockout ends, not a fresh budget.
        e.attempts = this.budget - 1
        this.touch(k, e)
      }
      return { ok: false, retryAfterMs: this.retryAfter(entries, t), newLockout: true, lockedKeys: spent }
    }
    for (let i = 0; i < uniq.length; i++) {
      const e = entries[i] ?? { attempts: 0, lockouts: 0, lockedUntil: 0, lastAttempt: t }
      e.attempts++
      e.lastAttempt = t
      this.touch(uniq[i]!, e)
    }
    let settled = false
    return {
      ok: true,
      settle: (success: boolean): void => {
        if (settled) return
        settled = true
        for (const k of uniq) {
          if (success) { this.counted.delete(k); this.penalized.delete(k); continue }
          const e = this.counted.get(k) ?? this.penalized.get(k)
          if (e) e.lastAttempt = Math.max(e.lastAttempt, this.now())
        }
      },
    }
  }

  /** The key's entry, or undefined when it is unknown or its memory has run out. */
  private current(key: string, t: number): Entry | undefined {
    const e = this.counted.get(key) ?? this.penalized.get(key)
    if (!e) return undefined
    if (t >= Math.max(e.lastAttempt, e.lockedUntil) + this.windowMs) {
      this.counted.delete(key)
      this.penalized.delete(key)
      return undefined
    }
    return e
  }

  private retryAfter(entries: (Entry | undefined)[], t: number): number {
    return Math.max(1, ...entries.map((e) => (e ? e.lockedUntil - t : 0)))
  }

  private touch(key: string, e: Entry): void {
    this.counted.delete(key)
    this.penalized.delete(key)
    ;(e.lockouts > 0 ? this.penalized : this.counted).set(key, e)
    // Never the key just touched (the newest of its table): a table full of locked keys must not make new keys go uncounted.
    while (this.size > this.maxKeys) {
      const c = this.counted.keys().next().value
      if (c !== undefined && c !== key) { this.counted.delete(c); continue }
      const p = this.penalized.keys().next().value
      if (p !== undefined && p !== key) { this.penalized.delete(p); continue }
      break
    }
  }
}
