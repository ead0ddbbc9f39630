// Pure decisions: who may subscribe to / command which device, who is blocked, and what a device's presence is.
import type { XmppConfig } from './config.ts'

/** `pattern` is a bare JID, a domain (matches every JID of that domain) or "*". `jid` is bare and lowercase. */
export function jidMatches(pattern: string, jid: string): boolean {
  const p = pattern.toLowerCase()
  if (p === '*') return true
  if (p.includes('@')) return p === jid
  const at = jid.indexOf('@')
  return (at >= 0 ? jid.slice(at + 1) : jid) === p
}

export type Right = 'subscribe' | 'command'

export function allowed(cfg: Pick<XmppConfig, 'allow' | 'groups'>, jid: string, device: string, right: Right): boolean {
  return cfg.allow.some((rule) => {
    if (right === 'command' && !rule.commands) return false
    if (!rule.jids.some((p) => jidMatches(p, jid))) return false
    if (!rule.devices && !rule.groups) return true
    if (rule.devices?.some((d) => d === '*' || d === device)) return true
    return rule.groups?.some((g) => cfg.groups[g]?.some((d) => d === '*' || d === device)) ?? false
  })
}

export function blockedBy(patterns: Iterable<string>, jid: string): boolean {
  for (const p of patterns) if (jidMatches(p, jid)) return true
  return false
}

/** Tracks a device's reading rhythm: its usual interval (a moving average of gaps) and when it last reported. */
export class Rhythm {
  lastAt: number | null = null
  intervalMs: number | null = null

  note(now: number): void {
    if (this.lastAt !== null) {
      const gap = now - this.lastAt
      // The bus coalesces readings (at most a few per second): tiny gaps say nothing about the device's interval.
      if (gap >= 50) this.intervalMs = this.intervalMs === null ? gap : Math.round(this.intervalMs * 0.7 + gap * 0.3)
    }
    this.lastAt = now
  }

  /** null: on time (or no rhythm known yet); otherwise how late. */
  lateness(now: number, awayFactor: number, xaFactor: number): 'away' | 'xa' | null {
    if (this.lastAt === null || this.intervalMs === null) return null
    const late = now - this.lastAt
    if (late > this.intervalMs * xaFactor) return 'xa'
    if (late > this.intervalMs * awayFactor) return 'away'
    return null
  }
}
