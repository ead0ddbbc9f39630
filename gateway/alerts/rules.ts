// Pure alert rules: device presence events, readings and periodic snapshots (outbox, upstreams) go in, raise/clear
// transitions come out. No timers and no I/O: every input carries the time, so a sequence always gives the same
// alerts (the unit tests drive it with a fake clock) and the engine only has to call tick() when nextDue() says.
import type { AlertsConfig, ThresholdRule } from './config.ts'

export type AlertRule = 'device_offline' | 'threshold' | 'outbox_backlog' | 'outbox_drops' | 'upstream_down' | 'outbox_corrupted'
export const ALERT_RULES: readonly AlertRule[] = ['device_offline', 'threshold', 'outbox_backlog', 'outbox_drops', 'upstream_down', 'outbox_corrupted']
export type Severity = 'warning' | 'critical'

export interface Alert {
  /** Stable while the condition lasts: `device_offline:sensor-1`, `threshold:sensor-1:temperature>30`, `upstream_down:cloud`. */
  id: string
  rule: AlertRule
  severity: Severity
  /** When the condition began (ms since epoch): the first drop, the first out-of-range reading. */
  since: number
  text: string
  device?: string
  upstream?: string
}

/** A raise or a clear. `text` says what happened: the alert's text, or why it cleared ("sensor-1 is back online"). */
export interface AlertEvent { type: 'raised' | 'cleared'; alert: Alert; text: string; at: number }

import type { MetricValue } from '../readings.ts'
export type { MetricValue }

export interface UpstreamSnapshot { name: string; connected: boolean; since: number; lastError: string | null }

export type AlertInput =
  | { kind: 'online'; device: string }
  | { kind: 'offline'; device: string; reason: string }
  | { kind: 'reading'; device: string; metrics: Record<string, MetricValue> }
  | { kind: 'outbox'; depth: number; oldestAgeMs: number; drops: number }
  | { kind: 'upstreams'; upstreams: UpstreamSnapshot[] }
  /** The outbox was found corrupted at start and salvaged (text: what happened); null once the operator removed the moved file. */
  | { kind: 'outboxCorrupted'; text: string | null }
  /** The device was removed from the registry: its alerts clear, its pending ones are dropped. */
  | { kind: 'forget'; device: string }
  | { kind: 'tick' }

interface Presence {
  online: boolean
  onlineSince: number
  reason: string
  /** Went offline at `since` and not raised yet; `drops` counts the offlines inside the hold window. */
  window: { since: number; drops: number } | null
  alert: Alert | null
}

interface Level { out: boolean; changedAt: number; value: number; alert: Alert | null }

function fmt(v: number): string { return String(Math.round(v * 1000) / 1000) }

function duration(ms: number): string {
  const s = Math.round(ms / 1000)
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`
}

export interface RulesOptions {
  /** Whether a device's offline alert may be raised (registered, or a configured serial/Firmata board). */
  tracked?: (device: string) => boolean
}

export class AlertRules {
  private readonly presence = new Map<string, Presence>()
  /** Per threshold rule (by index): per device. */
  private readonly levels: Map<string, Level>[]
  private readonly thresholdKeys: string[]
  private backlog: Alert | null = null
  private corrupted: Alert | null = null
  /** Drops seen in outbox stats so far; `count`: those since the active drops alert was raised. */
  private drops = { seen: 0, count: 0, lastAt: 0, alert: null as Alert | null }
  private readonly upstreams = new Map<string, Alert>()
  private readonly holdMs: number
  private hint = Infinity
  private readonly tracked: (device: string) => boolean

  constructor(private readonly cfg: AlertsConfig, opts: RulesOptions = {}) {
    this.holdMs = cfg.offlineHoldSeconds * 1000
    this.tracked = opts.tracked ?? (() => true)
    this.levels = cfg.thresholds.map(() => new Map())
    // Readable ids (`temperature>30`); a duplicate rule gets its index so two rules never share an alert.
    const keys = cfg.thresholds.map((t) => `${t.metric}${t.above !== undefined ? `>${t.above}` : ''}${t.below !== undefined ? `<${t.below}` : ''}`)
    const scoped = keys.map((k, i) => `${cfg.thresholds[i]!.device ?? '*'} ${k}`)
    this.thresholdKeys = keys.map((k, i) => (scoped.indexOf(scoped[i]!) === i ? k : `${k}#${i}`))
  }

  /** Applies one input at time `at` and returns the transitions it caused (time-based ones included). */
  apply(input: AlertInput, at: number): AlertEvent[] {
    const out: AlertEvent[] = []
    // Events settle only what they touch (a reading must not cost a walk over every device); the periodic
    // tick/upstreams inputs run every timer.
    switch (input.kind) {
      case 'online': this.online(input.device, at); this.settlePresence(input.device, at, out); break
      case 'offline': this.offline(input.device, input.reason, at); this.settlePresence(input.device, at, out); break
      case 'reading': this.reading(input.device, input.metrics, at, out); break
      case 'outbox': this.outbox(input, at, out); break
      case 'upstreams': this.upstreamsSnapshot(input.upstreams, at, out); this.tick(at, out); break
      case 'forget': this.forget(input.device, at, out); break
      case 'outboxCorrupted': this.outboxCorrupted(input.text, at, out); break
      case 'tick': this.tick(at, out); break
    }
    return out
  }

  /** The earliest due time of hold-downs started since the last takeDueHint() (cheaper than nextDue() per event). */
  takeDueHint(): number {
    const h = this.hint
    this.hint = Infinity
    return h
  }

  /** Active alerts, oldest first. */
  /** Critical, raised at once and kept until the condition's source says it is over (the moved file is gone). */
  private outboxCorrupted(text: string | null, at: number, out: AlertEvent[]): void {
    if (text !== null && !this.corrupted) {
      this.corrupted = { id: 'outbox_corrupted', rule: 'outbox_corrupted', severity: 'critical', since: at, text }
      out.push({ type: 'raised', alert: this.corrupted, text, at })
    } else if (text === null && this.corrupted) {
      out.push({ type: 'cleared', alert: this.corrupted, text: 'the corrupted outbox file was removed', at })
      this.corrupted = null
    }
  }

  active(): Alert[] {
    const all: Alert[] = []
    for (const p of this.presence.values()) if (p.alert) all.push(p.alert)
    for (const m of this.levels) for (const l of m.values()) if (l.alert) all.push(l.alert)
    if (this.backlog) all.push(this.backlog)
    if (this.drops.alert) all.push(this.drops.alert)
    if (this.corrupted) all.push(this.corrupted)
    all.push(...this.upstreams.values())
    return all.sort((a, b) => a.since - b.since || (a.id < b.id ? -1 : 1))
  }

  /** The earliest time at which tick() may change something without a new input (null: nothing pending). */
  nextDue(): number | null {
    let due = Infinity
    for (const p of this.presence.values()) {
      if (p.window) due = Math.min(due, p.window.since + this.holdMs)
      else if (p.alert && p.online) due = Math.min(due, p.onlineSince + this.holdMs)
    }
    for (const [i, m] of this.levels.entries()) {
      const hold = this.cfg.thresholds[i]!.holdSeconds * 1000
      for (const l of m.values()) if (l.out !== (l.alert !== null)) due = Math.min(due, l.changedAt + hold)
    }
    if (this.drops.alert) due = Math.min(due, this.drops.lastAt + this.cfg.dropsClearSeconds * 1000)
    return due === Infinity ? null : due
  }

  // ---- device offline ------------------------------------------------------------------------------------------------

  private online(device: string, at: number): void {
    if (!this.cfg.offline) return
    const p = this.presence.get(device)
    if (!p) {
      // Anonymous (lab) clients and unknown ids are never tracked: no state kept for them either.
      if (this.tracked(device)) this.presence.set(device, { online: true, onlineSince: at, reason: '', window: null, alert: null })
      return
    }
    if (p.online) return
    p.online = true
    p.onlineSince = at
    if (p.alert) this.hint = Math.min(this.hint, at + this.holdMs)
  }

  private offline(device: string, reason: string, at: number): void {
    // Never online since start (or offline alerts off): nothing to lose, nothing to say.
    const p = this.presence.get(device)
    if (!p || !p.online) return
    p.online = false
    p.reason = reason
    if (p.alert) return
    if (p.window) p.window.drops++
    else {
      p.window = { since: at, drops: 1 }
      this.hint = Math.min(this.hint, at + this.holdMs)
    }
  }

  private settlePresence(device: string, at: number, out: AlertEvent[]): void {
    const p = this.presence.get(device)
    if (!p) return
    if (p.window && at >= p.window.since + this.holdMs) {
      const w = p.window
      p.window = null
      // Back after a single drop: that was a reconnect, not an outage. Still down, or dropped again: one alert.
      if (p.online && w.drops === 1) return
      if (!this.tracked(device)) { this.presence.delete(device); return }
      const text = w.drops > 1
        ? `${device} went offline ${w.drops} times in ${duration(at - w.since)} (flapping; last: ${p.reason})`
        : `${device} went offline (${p.reason})`
      p.alert = { id: `device_offline:${device}`, rule: 'device_offline', severity: 'warning', since: w.since, text, device }
      out.push({ type: 'raised', alert: p.alert, text, at })
    } else if (p.alert && p.online && at >= p.onlineSince + this.holdMs) {
      const alert = p.alert
      p.alert = null
      out.push({ type: 'cleared', alert, text: `${device} is back online`, at })
    }
  }

  // ---- thresholds ----------------------------------------------------------------------------------------------------

  private reading(device: string, metrics: Record<string, MetricValue>, at: number, out: AlertEvent[]): void {
    for (const [i, t] of this.cfg.thresholds.entries()) {
      if (t.device !== undefined && t.device !== '*' && t.device !== device) continue
      const v = metrics[t.metric]
      if (typeof v !== 'number' || !Number.isFinite(v)) continue
      const m = this.levels[i]!
      let l = m.get(device)
      if (!l) m.set(device, l = { out: false, changedAt: at, value: v, alert: null })
      l.value = v
      const isOut = outOfRange(t, v, l.alert !== null)
      if (isOut !== l.out) { l.out = isOut; l.changedAt = at }
      this.settleLevel(i, device, l, at, out)
    }
  }

  private settleLevel(i: number, device: string, l: Level, at: number, out: AlertEvent[]): void {
    const t = this.cfg.thresholds[i]!
    const hold = t.holdSeconds * 1000
    if (l.out && !l.alert && at >= l.changedAt + hold) {
      const edge = t.above !== undefined && l.value > t.above ? `above ${t.above}` : `below ${t.below}`
      const text = `${device}: ${t.metric} = ${fmt(l.value)} is ${edge}${hold > 0 ? ` (for ${duration(at - l.changedAt)})` : ''}`
      l.alert = { id: `threshold:${device}:${this.thresholdKeys[i]}`, rule: 'threshold', severity: t.severity, since: l.changedAt, text, device }
      // Out now means "not yet back inside the hysteresis band".
      l.out = outOfRange(t, l.value, true)
      out.push({ type: 'raised', alert: l.alert, text, at })
    } else if (!l.out && l.alert && at >= l.changedAt + hold) {
      const alert = l.alert
      l.alert = null
      l.out = outOfRange(t, l.value, false)
      out.push({ type: 'cleared', alert, text: `${device}: ${t.metric} = ${fmt(l.value)} is back in range`, at })
    }
    if (l.out !== (l.alert !== null)) this.hint = Math.min(this.hint, l.changedAt + hold)
  }

  // ---- outbox and upstreams -------------------------------------------------------------------------------------------

  private outbox(s: { depth: number; oldestAgeMs: number; drops: number }, at: number, out: AlertEvent[]): void {
    const limitMs = this.cfg.backlogAgeSeconds * 1000
    const late = limitMs > 0 && s.depth > 0 && s.oldestAgeMs > limitMs
    if (late && !this.backlog) {
      const text = `outbox backlog: the oldest reading has waited ${duration(s.oldestAgeMs)} for an upstream (limit ${duration(limitMs)}; ${s.depth} readings stored)`
      this.backlog = { id: 'outbox_backlog', rule: 'outbox_backlog', severity: 'warning', since: at - (s.oldestAgeMs - limitMs), text }
      out.push({ type: 'raised', alert: this.backlog, text, at })
    } else if (!late && this.backlog) {
      const alert = this.backlog
      this.backlog = null
      out.push({ type: 'cleared', alert, text: `outbox backlog cleared (${s.depth} readings stored, oldest ${duration(s.oldestAgeMs)})`, at })
    }
    if (s.drops > this.drops.seen) {
      const n = s.drops - this.drops.seen
      this.drops.seen = s.drops
      this.drops.lastAt = at
      this.drops.count = this.drops.alert ? this.drops.count + n : n
      const text = `outbox retention dropped ${this.drops.count} readings before every upstream had them`
      if (this.drops.alert) this.drops.alert.text = text
      else {
        this.drops.alert = { id: 'outbox_drops', rule: 'outbox_drops', severity: 'critical', since: at, text }
        out.push({ type: 'raised', alert: this.drops.alert, text, at })
      }
    }
  }

  private upstreamsSnapshot(list: UpstreamSnapshot[], at: number, out: AlertEvent[]): void {
    const limitMs = this.cfg.upstreamDownSeconds * 1000
    if (limitMs <= 0) return
    for (const u of list) {
      const active = this.upstreams.get(u.name)
      if (!u.connected && !active && at - u.since > limitMs) {
        const text = `upstream "${u.name}" down for more than ${duration(limitMs)}${u.lastError ? ` (last error: ${u.lastError})` : ''}`
        const alert: Alert = { id: `upstream_down:${u.name}`, rule: 'upstream_down', severity: 'warning', since: u.since, text, upstream: u.name }
        this.upstreams.set(u.name, alert)
        out.push({ type: 'raised', alert, text, at })
      } else if (u.connected && active) {
        this.upstreams.delete(u.name)
        out.push({ type: 'cleared', alert: active, text: `upstream "${u.name}" is connected again after ${duration(at - active.since)}`, at })
      }
    }
  }

  // ---- removal and time ----------------------------------------------------------------------------------------------

  private forget(device: string, at: number, out: AlertEvent[]): void {
    const p = this.presence.get(device)
    if (p?.alert) out.push({ type: 'cleared', alert: p.alert, text: `${device} was removed`, at })
    this.presence.delete(device)
    for (const m of this.levels) {
      const l = m.get(device)
      if (l?.alert) out.push({ type: 'cleared', alert: l.alert, text: `${device} was removed`, at })
      m.delete(device)
    }
  }

  private tick(at: number, out: AlertEvent[]): void {
    for (const device of [...this.presence.keys()]) this.settlePresence(device, at, out)
    for (const [i, m] of this.levels.entries()) for (const [device, l] of m) this.settleLevel(i, device, l, at, out)
    if (this.drops.alert && at >= this.drops.lastAt + this.cfg.dropsClearSeconds * 1000) {
      const alert = this.drops.alert
      this.drops.alert = null
      out.push({ type: 'cleared', alert, text: `no outbox drops for ${duration(at - this.drops.lastAt)}`, at })
    }
  }
}

/** Out of range; while alerted, only a value inside the hysteresis band counts as back. */
export function outOfRange(t: ThresholdRule, v: number, alerted: boolean): boolean {
  const h = alerted ? t.hysteresis : 0
  return (t.above !== undefined && v > t.above - h) || (t.below !== undefined && v < t.below + h)
}
