// The gateway lifecycle on an amqp upstream's status address (schema 1): birth, heartbeat, presence, alert, death.
// Pure builders (no rhea, no I/O): upstream.ts sends what these return. A fleet tool (fleet/) reads the same contract,
// and bridges/amqp/status.schema.json describes every body; change the three together and bump SCHEMA on a break.
import { createHash, randomUUID } from 'node:crypto'
import type { AlertEvent } from '../../gateway/alerts/rules.ts'

/** The version of the status-address contract, in every body and in application_properties. */
export const LIFECYCLE_SCHEMA = 1
/** A heartbeat, a birth: stale after this many heartbeat intervals (the fleet tool's `stale`, the broker's TTL). */
export const TTL_INTERVALS = 3

export type LifecycleKind = 'birth' | 'status' | 'presence' | 'alert' | 'death'

/** One device as the gateway knows it (registry and links merged by app/main.ts). */
export interface DeviceState {
  id: string
  online: boolean
  link: string | null
  firmware: string | null
  /** ms since epoch, or null when never seen. */
  lastSeen: number | null
}

/** What the gateway hands its amqp upstreams for the lifecycle messages (setLifecycle). */
export interface GatewayLifecycle {
  /** Random per gateway process start: a new bootId in a birth means the gateway restarted. */
  bootId: string
  version: string
  /** configDigest() of the running config. */
  configDigest: string
  /** Every device: registered, connected or on a serial/Firmata link (sync, cheap: called on birth and heartbeat). */
  devices(): DeviceState[]
}

/** A device went online or offline (from the bus's deviceOnline/deviceOffline). */
export interface PresenceEvent { device: string; online: boolean; link: string; reason?: string; at: number }

/** Upstreams that send lifecycle messages: app/main.ts finds them with isLifecycleSink. */
export interface LifecycleSink {
  setLifecycle(l: GatewayLifecycle): void
  publishPresence(e: PresenceEvent): void
}

export function isLifecycleSink<T extends object>(u: T): u is T & LifecycleSink {
  return typeof (u as Partial<LifecycleSink>).setLifecycle === 'function' && typeof (u as Partial<LifecycleSink>).publishPresence === 'function'
}

/** The fields of one status-address message; upstream.ts hands them to rhea as they are (body as a data section). */
export interface LifecycleOut {
  to: string
  message_id: string
  subject: LifecycleKind
  creation_time: Date
  /** ms; birth and heartbeat only (an expired one says nothing true any more: let the broker drop it). */
  ttl?: number
  content_type: 'application/json'
  durable: boolean
  application_properties: { gateway: string; kind: LifecycleKind; schema: typeof LIFECYCLE_SCHEMA } & Record<string, string | number | boolean>
  body: Buffer
}

/** Per upstream connection: where the messages go and what every one of them says about the gateway. */
export interface LifecycleContext {
  gateway: string
  address: string
  bootId: string
  heartbeatSeconds: number
}

/** A stand-in for when the gateway gave none (an upstream used on its own, e.g. by a tool): no devices. */
export function bareLifecycle(version = 'unknown'): GatewayLifecycle {
  return { bootId: randomUUID(), version, configDigest: configDigest({}), devices: () => [] }
}

export function ttlSeconds(heartbeatSeconds: number): number { return TTL_INTERVALS * heartbeatSeconds }

/** Keys whose values are credentials: left out of the config digest (and so never hashed into something published). */
const SECRET_KEY = /^(password|secret|token|passphrase|apikey|api_key|key)$/i

/** 16 hex chars of SHA-256 over the config as canonical JSON (sorted keys), credentials removed: "same config?" at a glance. */
export function configDigest(config: unknown): string {
  return createHash('sha256').update(canonical(config)).digest('hex').slice(0, 16)
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  if (v && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([k, x]) => x !== undefined && !SECRET_KEY.test(k)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(',')}}`
  }
  return JSON.stringify(v) ?? 'null'
}

function iso(ms: number | null): string | null { return ms === null ? null : new Date(ms).toISOString() }

function out(ctx: LifecycleContext, kind: LifecycleKind, now: number, n: number, fields: Record<string, unknown>, opts: { ttl?: number; durable: boolean; props?: Record<string, string | number | boolean>; messageId?: string }): LifecycleOut {
  const body = { schema: LIFECYCLE_SCHEMA, kind, gateway: ctx.gateway, at: new Date(now).toISOString(), bootId: ctx.bootId, ...fields }
  return {
    to: ctx.address,
    message_id: opts.messageId ?? `${ctx.gateway}:${kind}:${ctx.bootId}:${n}`,
    subject: kind,
    creation_time: new Date(now),
    ...(opts.ttl !== undefined ? { ttl: opts.ttl } : {}),
    content_type: 'application/json',
    durable: opts.durable,
    application_properties: { gateway: ctx.gateway, kind, schema: LIFECYCLE_SCHEMA, ...opts.props },
    body: Buffer.from(JSON.stringify(body), 'utf8'),
  }
}

/** Sent first each time the upstream link comes up: who this gateway is now, and every device it has. */
export function birthMessage(ctx: LifecycleContext, l: Pick<GatewayLifecycle, 'version' | 'configDigest'>, devices: DeviceState[], now: number, n: number): LifecycleOut {
  const ttl = ttlSeconds(ctx.heartbeatSeconds)
  return out(ctx, 'birth', now, n, {
    version: l.version, configDigest: l.configDigest, heartbeatSeconds: ctx.heartbeatSeconds, ttlSeconds: ttl,
    devices: devices.map((d) => ({ id: d.id, online: d.online, link: d.link, firmware: d.firmware, lastSeen: iso(d.lastSeen) })),
  }, { ttl: ttl * 1000, durable: true })
}

/**
 * The periodic heartbeat: the gateway's snapshot (version, uptimeSeconds, backlog, upstreams, alerts: see
 * statusSnapshot in app/main.ts) plus the device list. devicesOnline counts that list, so the two agree.
 */
export function heartbeatMessage(ctx: LifecycleContext, snapshot: Record<string, unknown>, devices: DeviceState[], now: number, n: number): LifecycleOut {
  const ttl = ttlSeconds(ctx.heartbeatSeconds)
  const { schema: _s, kind: _k, gateway: _g, at: _a, bootId: _b, ...rest } = snapshot
  return out(ctx, 'status', now, n, {
    ...rest,
    ttlSeconds: ttl,
    devicesOnline: devices.filter((d) => d.online).length,
    devicesTotal: devices.length,
    devices: devices.map((d) => ({ id: d.id, online: d.online })),
    alerts: Array.isArray(rest.alerts) ? rest.alerts : [],
  }, { ttl: ttl * 1000, durable: false })
}

/** A device going online or offline, as it happens (not queued while the link is down: the next birth has them all). */
export function presenceMessage(ctx: LifecycleContext, e: PresenceEvent, n: number): LifecycleOut {
  return out(ctx, 'presence', e.at, n, {
    device: e.device, online: e.online, link: e.link, ...(e.reason !== undefined ? { reason: e.reason } : {}),
  }, { durable: true })
}

/** An alert raised or cleared, as it happens (the heartbeat repeats the active ones). */
export function alertMessage(ctx: LifecycleContext, e: AlertEvent): LifecycleOut {
  const a = e.alert
  const alert = { id: a.id, rule: a.rule, severity: a.severity, since: new Date(a.since).toISOString(), text: a.text, ...(a.device !== undefined ? { device: a.device } : {}), ...(a.upstream !== undefined ? { upstream: a.upstream } : {}) }
  return out(ctx, 'alert', e.at, 0, { event: e.type, text: e.text, alert }, {
    durable: true,
    messageId: `${ctx.gateway}:alert:${a.id}:${e.type}:${e.at}`,
    props: { event: e.type, alert: a.id, rule: a.rule, severity: a.severity },
  })
}

/** The last word on a clean shutdown, sent (and settled) before the link closes. */
export function deathMessage(ctx: LifecycleContext, now: number, n: number, reason: 'shutdown' = 'shutdown'): LifecycleOut {
  return out(ctx, 'death', now, n, { reason }, { durable: true })
}
