// The alerts engine: feeds bus events (presence, readings) and snapshots (outbox stats, upstream status) into the
// pure rules, runs their hold-down timers, and announces each raise and clear once: on the bus (dashboard, XMPP,
// AMQP), in the log and in metrics. It never sits in the data path; a gateway stop ends it without raising anything.
import type { Logger } from 'pino'
import type { GatewayBus, GatewayEvents } from '../events.ts'
import type { Metrics } from '../metrics.ts'
import type { OutboxStats } from '../outbox/types.ts'
import type { AlertsConfig } from './config.ts'
import { ALERT_RULES, AlertRules, type Alert, type AlertEvent, type AlertInput, type UpstreamSnapshot } from './rules.ts'

/** An alert as /healthz, the dashboard and the AMQP heartbeat show it (`since` as an ISO time). */
export type AlertView = Omit<Alert, 'since'> & { since: string }

export const alertView = (a: Alert): AlertView => ({ ...a, since: new Date(a.since).toISOString() })

export interface AlertEngineDeps {
  config: AlertsConfig
  bus: GatewayBus
  log: Logger
  metrics: Pick<Metrics, 'alertsActive' | 'alertsRaised'>
  /** Whether a device's offline alert may be raised: registered or a configured board (not anonymous, not removed). */
  tracked(device: string): boolean
  /** Read about once a second (cheap: in-memory link states). */
  upstreams(): UpstreamSnapshot[]
  now?: () => number
}

/** An upstream that publishes alerts as they happen (the AMQP status address). */
export interface AlertSink { publishAlert(e: AlertEvent): void }

export function isAlertSink<T extends object>(u: T): u is T & AlertSink {
  return typeof (u as Partial<AlertSink>).publishAlert === 'function'
}

/** Upstream states are polled at least this often; hold-down timers fire on time in between. */
const POLL_MS = 1000
/** Devices with an active alert are checked this often for removal (any path: CLI, dashboard), which clears it. */
const SWEEP_MS = 5_000

export class AlertEngine {
  private readonly rules: AlertRules
  private timer: NodeJS.Timeout | null = null
  private timerAt = Infinity
  private sweepAt = 0
  private running = false
  private readonly now: () => number
  private readonly listeners: { [K in keyof GatewayEvents]?: (...a: GatewayEvents[K]) => void } = {}

  constructor(private readonly d: AlertEngineDeps) {
    this.now = d.now ?? Date.now
    this.rules = new AlertRules(d.config, { tracked: (dev) => d.tracked(dev) })
  }

  start(): void {
    if (this.running) return
    this.running = true
    for (const rule of ALERT_RULES) { this.d.metrics.alertsActive.set({ rule }, 0); this.d.metrics.alertsRaised.inc({ rule }, 0) }
    this.listeners.deviceOnline = (e) => this.feed({ kind: 'online', device: e.device })
    this.listeners.deviceOffline = (e) => this.feed({ kind: 'offline', device: e.device, reason: e.reason })
    if (this.d.config.thresholds.length) this.listeners.reading = (e) => this.feed({ kind: 'reading', device: e.device, metrics: e.metrics })
    for (const [k, fn] of Object.entries(this.listeners)) this.d.bus.on(k as keyof GatewayEvents, fn as never)
    this.schedule()
  }

  /** Stops listening and timing: nothing is raised or cleared by the gateway going down. */
  stop(): void {
    this.running = false
    for (const [k, fn] of Object.entries(this.listeners)) this.d.bus.off(k as keyof GatewayEvents, fn as never)
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }

  /** Outbox figures, whenever the gateway reads them (refreshStats). */
  observeOutbox(s: OutboxStats): void {
    this.feed({ kind: 'outbox', depth: s.depth, oldestAgeMs: s.oldestAgeMs, drops: Object.values(s.drops).reduce((a, b) => a + b, 0) })
  }

  /** The outbox's salvage at start (what happened), or null once the moved file is gone. */
  observeOutboxRecovery(text: string | null): void { this.feed({ kind: 'outboxCorrupted', text }) }

  /** A device removed from the registry: its alerts clear and nothing more is raised for it. */
  forget(device: string): void { this.feed({ kind: 'forget', device }) }

  active(): AlertView[] { return this.rules.active().map(alertView) }

  private feed(input: AlertInput): void {
    if (!this.running) return
    const now = this.now()
    this.announce(this.rules.apply(input, now))
    // A hold-down this input started may be due before the timer: bring the timer forward (no walk over devices).
    const due = this.rules.takeDueHint()
    if (due < this.timerAt) this.arm(Math.max(0, due - now), now)
  }

  private poll(): void {
    this.timer = null
    this.timerAt = Infinity
    if (!this.running) return
    try {
      const now = this.now()
      this.announce(this.rules.apply({ kind: 'upstreams', upstreams: this.d.upstreams() }, now))
      if (now >= this.sweepAt) {
        this.sweepAt = now + SWEEP_MS
        const gone = new Set(this.rules.active().flatMap((a) => (a.device !== undefined && !this.d.tracked(a.device) ? [a.device] : [])))
        for (const device of gone) this.announce(this.rules.apply({ kind: 'forget', device }, now))
      }
    } catch (err) { this.d.log.error({ err: (err as Error).message }, 'alerts: evaluation failed') }
    this.schedule()
  }

  private schedule(): void {
    if (!this.running) return
    const due = this.rules.nextDue()
    const now = this.now()
    this.rules.takeDueHint() // nextDue() covers them
    this.arm(Math.max(0, Math.min(POLL_MS, due === null ? POLL_MS : due - now)), now)
  }

  private arm(wait: number, now: number): void {
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = now + wait
    this.timer = setTimeout(() => this.poll(), wait)
    this.timer.unref()
  }

  private announce(events: AlertEvent[]): void {
    if (events.length === 0) return
    for (const e of events) {
      const a = e.alert
      const fields = { alert: a.id, rule: a.rule, severity: a.severity, ...(a.device ? { device: a.device } : {}), ...(a.upstream ? { upstream: a.upstream } : {}), since: new Date(a.since).toISOString(), text: e.text }
      if (e.type === 'raised') {
        this.d.metrics.alertsRaised.inc({ rule: a.rule })
        this.d.log.warn(fields, 'alert raised')
        this.d.bus.safeEmit('alertRaised', e)
      } else {
        this.d.log.info(fields, 'alert cleared')
        this.d.bus.safeEmit('alertCleared', e)
      }
    }
    const counts = new Map<string, number>(ALERT_RULES.map((r) => [r, 0]))
    for (const a of this.rules.active()) counts.set(a.rule, (counts.get(a.rule) ?? 0) + 1)
    for (const [rule, n] of counts) this.d.metrics.alertsActive.set({ rule }, n)
  }
}
