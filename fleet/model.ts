// The fleet's state model, pure: decoded lifecycle messages go in (each with the time the fleet received it), the
// state of every gateway comes out for a given `now`. No timers, no I/O: online while messages arrive within the
// gateway's ttlSeconds, stale once the last one is older, dead after a `death` or when stale for 2 x ttlSeconds; a
// new bootId is a restart. Bounded: at most maxGateways gateways, maxDevices devices and maxAlerts alerts each; what
// does not fit is refused (or cut) and counted, so a flood of made-up ids cannot grow memory or the store.
import type { AlertEntry, Backlog, DeviceEntry, Lifecycle, UpstreamEntry } from './message.ts'

export type GatewayState = 'online' | 'stale' | 'dead'

export interface DeviceRecord extends DeviceEntry { changedAt: number }

/** Everything known about one gateway; also what the store persists (plain JSON). */
export interface GatewayRecord {
  id: string
  bootId: string | null
  version: string | null
  configDigest: string | null
  heartbeatSeconds: number | null
  ttlSeconds: number
  firstSeen: number
  /** Fleet receive time of the last message (ms): the gateway's own clock is not trusted for liveness. */
  lastMessageAt: number
  lastKind: Lifecycle['kind']
  lastBirthAt: number | null
  restarts: number
  death: { at: number; reason: string } | null
  uptimeSeconds: number | null
  backlog: Backlog | null
  upstreams: UpstreamEntry[]
  devicesOnline: number | null
  devicesTotal: number | null
  devices: DeviceRecord[]
  alerts: AlertEntry[]
}

export interface GatewayView {
  id: string
  state: GatewayState
  version: string | null
  bootId: string | null
  lastMessageAt: number
  ageSeconds: number
  ttlSeconds: number
  restarts: number
  lastBirthAt: number | null
  deathReason: string | null
  uptimeSeconds: number | null
  backlog: Backlog | null
  /** The largest lag over the gateway's upstreams (rows not yet acked), null when none reports one. */
  upstreamLag: number | null
  upstreams: UpstreamEntry[]
  devicesOnline: number
  devicesTotal: number
  alerts: AlertEntry[]
}

export interface Transition { gateway: string; from: GatewayState | null; to: GatewayState; at: number; why: string }

export interface ModelLimits { maxGateways: number; maxDevices: number; maxAlerts: number; defaultTtlSeconds: number }

export type IngestResult = { ok: true; transitions: Transition[] } | { ok: false; reason: 'too_many_gateways' }

export function stateOf(g: GatewayRecord, now: number): GatewayState {
  if (g.death) return 'dead'
  const age = now - g.lastMessageAt
  if (age <= g.ttlSeconds * 1000) return 'online'
  return age <= g.ttlSeconds * 3000 ? 'stale' : 'dead'
}

export function viewOf(g: GatewayRecord, now: number): GatewayView {
  const lags = g.upstreams.map((u) => u.lag).filter((l): l is number => l !== null)
  const devicesOnline = g.devices.length ? g.devices.filter((d) => d.online).length : g.devicesOnline ?? 0
  return {
    id: g.id, state: stateOf(g, now), version: g.version, bootId: g.bootId, lastMessageAt: g.lastMessageAt,
    ageSeconds: Math.max(0, Math.round((now - g.lastMessageAt) / 1000)), ttlSeconds: g.ttlSeconds, restarts: g.restarts,
    lastBirthAt: g.lastBirthAt, deathReason: g.death?.reason ?? null, uptimeSeconds: g.uptimeSeconds, backlog: g.backlog,
    upstreamLag: lags.length ? Math.max(...lags) : null, upstreams: g.upstreams,
    devicesOnline, devicesTotal: Math.max(g.devicesTotal ?? 0, g.devices.length), alerts: g.alerts,
  }
}

export class FleetModel {
  private readonly gateways = new Map<string, GatewayRecord>()
  /** The state last reported per gateway, for transitions found by time alone (stale, dead). */
  private readonly reported = new Map<string, GatewayState>()
  private readonly dirty = new Set<string>()
  /** Refusals by reason (decode refusals are counted here too, by the caller), and what was cut to fit the bounds. */
  readonly counters = { accepted: 0, refused: {} as Record<string, number>, devicesCut: 0, alertsCut: 0 }

  constructor(private readonly limits: ModelLimits) {}

  get size(): number { return this.gateways.size }

  count(reason: string): void { this.counters.refused[reason] = (this.counters.refused[reason] ?? 0) + 1 }

  /** Last-known state from the store: shown at once, as it was (their age decides online/stale/dead). */
  restore(records: GatewayRecord[], now: number): void {
    for (const r of records) {
      if (this.gateways.size >= this.limits.maxGateways) break
      this.gateways.set(r.id, r)
      this.reported.set(r.id, stateOf(r, now))
    }
  }

  ingest(m: Lifecycle, now: number): IngestResult {
    let g = this.gateways.get(m.gateway)
    const transitions: Transition[] = []
    const before = g ? stateOf(g, now) : null
    if (!g) {
      if (this.gateways.size >= this.limits.maxGateways) { this.count('too_many_gateways'); return { ok: false, reason: 'too_many_gateways' } }
      g = {
        id: m.gateway, bootId: m.bootId, version: null, configDigest: null, heartbeatSeconds: null, ttlSeconds: m.ttlSeconds ?? this.limits.defaultTtlSeconds,
        firstSeen: now, lastMessageAt: now, lastKind: m.kind, lastBirthAt: null, restarts: 0, death: null, uptimeSeconds: null,
        backlog: null, upstreams: [], devicesOnline: null, devicesTotal: null, devices: [], alerts: [],
      }
      this.gateways.set(g.id, g)
    }
    // A death from another process than the current one (a late message of an earlier run) says nothing about this one.
    if (m.kind === 'death' && m.bootId !== null && g.bootId !== null && m.bootId !== g.bootId) { this.count('stale_death'); return { ok: true, transitions } }
    this.counters.accepted++
    const restarted = m.kind !== 'death' && m.bootId !== null && g.bootId !== null && m.bootId !== g.bootId
    if (restarted) {
      g.restarts++
      // A new process: what the old one reported about devices and alerts no longer holds until it says so again.
      g.alerts = []
      g.uptimeSeconds = null
    }
    // A late message from a process that already said goodbye does not bring it back; a new process does.
    const lateAfterDeath = g.death !== null && !restarted && m.kind !== 'birth' && m.bootId === g.bootId && m.kind !== 'death'
    if (lateAfterDeath) { this.dirty.add(g.id); return { ok: true, transitions } }
    if (m.bootId !== null && m.kind !== 'death') g.bootId = m.bootId
    if (m.ttlSeconds !== null) g.ttlSeconds = m.ttlSeconds
    g.lastMessageAt = now
    g.lastKind = m.kind
    if (m.kind !== 'death') g.death = null
    switch (m.kind) {
      case 'birth':
        g.lastBirthAt = now
        g.version = m.version ?? g.version
        g.configDigest = m.configDigest
        g.heartbeatSeconds = m.heartbeatSeconds
        if (m.devices) this.setDevices(g, m.devices, now)
        break
      case 'status':
        g.version = m.version ?? g.version
        g.uptimeSeconds = m.uptimeSeconds
        g.backlog = m.backlog
        g.upstreams = m.upstreams
        g.devicesOnline = m.devicesOnline
        g.devicesTotal = m.devicesTotal
        if (m.devices) this.setDevices(g, m.devices, now)
        if (m.alerts) this.setAlerts(g, m.alerts)
        break
      case 'presence': {
        const d = g.devices.find((x) => x.id === m.device)
        if (d) { if (d.online !== m.online) d.changedAt = now; d.online = m.online; d.link = m.link ?? d.link }
        else if (g.devices.length < this.limits.maxDevices) g.devices.push({ id: m.device, online: m.online, link: m.link, firmware: null, lastSeen: null, changedAt: now })
        else this.counters.devicesCut++
        break
      }
      case 'alert':
        g.alerts = g.alerts.filter((a) => a.id !== m.alert.id)
        if (m.event === 'raised') this.setAlerts(g, [...g.alerts, m.alert])
        break
      case 'death':
        g.death = { at: now, reason: m.reason }
        break
    }
    this.dirty.add(g.id)
    const after = stateOf(g, now)
    if (restarted) transitions.push({ gateway: g.id, from: before, to: after, at: now, why: `restarted (${m.kind} with a new bootId)` })
    else if (after !== before) transitions.push({ gateway: g.id, from: before, to: after, at: now, why: before === null ? `first seen (${m.kind})` : m.kind === 'death' ? `death: ${m.reason}` : `back (${m.kind})` })
    else if (m.kind === 'birth') transitions.push({ gateway: g.id, from: before, to: after, at: now, why: 'birth (link up again)' })
    this.reported.set(g.id, after)
    return { ok: true, transitions }
  }

  /** States that changed by time alone since the last call (online -> stale -> dead). */
  tick(now: number): Transition[] {
    const out: Transition[] = []
    for (const g of this.gateways.values()) {
      const s = stateOf(g, now)
      const was = this.reported.get(g.id) ?? null
      if (s === was) continue
      this.reported.set(g.id, s)
      out.push({ gateway: g.id, from: was, to: s, at: now, why: s === 'stale' ? `no message for ${g.ttlSeconds} s (its ttl)` : s === 'dead' ? `stale for ${2 * g.ttlSeconds} s` : 'back' })
    }
    return out
  }

  views(now: number): GatewayView[] {
    return [...this.gateways.values()].map((g) => viewOf(g, now)).sort((a, b) => a.id.localeCompare(b.id))
  }

  view(id: string, now: number): GatewayView | undefined {
    const g = this.gateways.get(id)
    return g && viewOf(g, now)
  }

  devices(id: string): DeviceRecord[] | undefined { return this.gateways.get(id)?.devices }

  has(id: string): boolean { return this.gateways.has(id) }

  /** The records changed since the last call (for the store). */
  takeDirty(): GatewayRecord[] {
    const out: GatewayRecord[] = []
    for (const id of this.dirty) { const g = this.gateways.get(id); if (g) out.push(g) }
    this.dirty.clear()
    return out
  }

  private setDevices(g: GatewayRecord, list: DeviceEntry[], now: number): void {
    if (list.length > this.limits.maxDevices) this.counters.devicesCut += list.length - this.limits.maxDevices
    const known = new Map(g.devices.map((d) => [d.id, d]))
    g.devices = list.slice(0, this.limits.maxDevices).map((d) => {
      const k = known.get(d.id)
      return { id: d.id, online: d.online, link: d.link ?? k?.link ?? null, firmware: d.firmware ?? k?.firmware ?? null, lastSeen: d.lastSeen ?? k?.lastSeen ?? null, changedAt: k && k.online === d.online ? k.changedAt : now }
    })
  }

  private setAlerts(g: GatewayRecord, list: AlertEntry[]): void {
    if (list.length > this.limits.maxAlerts) this.counters.alertsCut += list.length - this.limits.maxAlerts
    g.alerts = list.slice(0, this.limits.maxAlerts)
  }
}
