// Pure decoding of one lifecycle message from a gateway's status address (birth, status, presence, alert, death;
// schema 1, see bridges/amqp/status.schema.json) into a typed, bounded value, or a refusal with its reason. No rhea
// here: fleet/amqp.ts hands over plain fields. Nothing in a body is trusted: every field is type-checked and
// length-bounded, and the gateway a message speaks for must be the same in its application properties, its body and
// the routing key the broker routed it with: a gateway can only speak for itself. RabbitMQ 3.10 does not tell an AMQP
// 1.0 consumer the routing key (no annotation; `to` is the sender's own text), so the routing is known by the link:
// fleet/amqp.ts consumes each known gateway on its own address (status.<id>), and `routedFor` names that gateway.

export const GATEWAY_ID_RE = /^[A-Za-z0-9._-]{1,64}$/
const MAX_TEXT = 500
const MAX_ID = 128

export type Kind = 'birth' | 'status' | 'presence' | 'alert' | 'death'
const KINDS: readonly Kind[] = ['birth', 'status', 'presence', 'alert', 'death']

/** What fleet/amqp.ts passes in: the parts of the AMQP message the fleet reads. */
export interface RawLifecycle {
  subject: unknown
  applicationProperties: Record<string, unknown> | undefined
  /** The data section (Buffer), a string, or an already decoded AMQP value. */
  body: unknown
  /** The gateway whose own address (routing key) the receiving link is bound to; null on the discovery link. */
  routedFor: string | null
  /** The AMQP header ttl (ms), if set. */
  ttlMs: number | null
}

export interface DeviceEntry { id: string; online: boolean; link: string | null; firmware: string | null; lastSeen: string | null }
export interface AlertEntry { id: string; rule: string; severity: string; since: string | null; text: string; device: string | null; upstream: string | null }
export interface Backlog { depth: number; bytes: number; oldestAgeSeconds: number; deadLettered: number }
export interface UpstreamEntry { name: string; connected: boolean; lag: number | null }

interface Base { gateway: string; at: number | null; bootId: string | null; ttlSeconds: number | null }
export type Lifecycle =
  | Base & { kind: 'birth'; version: string | null; configDigest: string | null; heartbeatSeconds: number | null; devices: DeviceEntry[] | null }
  | Base & { kind: 'status'; version: string | null; uptimeSeconds: number | null; devicesOnline: number | null; devicesTotal: number | null; backlog: Backlog | null; upstreams: UpstreamEntry[]; devices: DeviceEntry[] | null; alerts: AlertEntry[] | null }
  | Base & { kind: 'presence'; device: string; online: boolean; link: string | null; reason: string | null }
  | Base & { kind: 'alert'; event: 'raised' | 'cleared'; text: string; alert: AlertEntry }
  | Base & { kind: 'death'; reason: string }

export type Decoded = { ok: true; message: Lifecycle } | { ok: false; reason: RefusalReason; detail: string; gateway: string | null }
export type RefusalReason = 'malformed' | 'spoofed' | 'unknown_kind' | 'schema'

export interface DecodeLimits { maxDevices: number; maxAlerts: number }

/**
 * Each gateway's own status address under a status address with one wildcard segment: `/exchange/amq.topic/status.*`
 * gives `/exchange/amq.topic/status.gw-1` for gw-1 (a link bound to it gets only what was routed as that gateway).
 * Null for other addresses (`/queue/...`, `#`): the routing then cannot vouch for the sender.
 */
export function gatewayAddress(statusAddress: string): ((gateway: string) => string) | null {
  const m = /^(\/exchange\/[^/]+\/)(.+)$/.exec(statusAddress)
  if (!m) return null
  const parts = m[2]!.split('.')
  if (parts.filter((p) => p === '*').length !== 1 || parts.some((p) => p.includes('#') || (p !== '*' && p.includes('*')))) return null
  return (gateway) => m[1]! + parts.map((p) => (p === '*' ? gateway : p)).join('.')
}

const str = (v: unknown, max = MAX_TEXT): string | null => (typeof v === 'string' ? v.slice(0, max) : null)
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null)
const nonNeg = (v: unknown): number | null => { const n = num(v); return n !== null && n >= 0 ? n : null }
const obj = (v: unknown): Record<string, unknown> | null => (v && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : null)
const timeOf = (v: unknown): number | null => {
  if (typeof v === 'number' && Number.isFinite(v)) return v
  if (typeof v !== 'string' || v.length > 40) return null
  const t = Date.parse(v)
  return Number.isFinite(t) ? t : null
}
const isoOf = (v: unknown): string | null => { const t = timeOf(v); return t === null ? null : new Date(t).toISOString() }

function bodyObject(b: unknown): Record<string, unknown> | null {
  let text: string | null = null
  if (Buffer.isBuffer(b)) text = b.toString('utf8')
  else if (typeof b === 'string') text = b
  else if (b && typeof b === 'object' && 'content' in b && Buffer.isBuffer((b as { content: unknown }).content)) text = (b as { content: Buffer }).content.toString('utf8')
  else return obj(b)
  try { return obj(JSON.parse(text)) } catch { return null }
}

function deviceList(v: unknown, max: number): DeviceEntry[] | null {
  if (!Array.isArray(v)) return null
  const out: DeviceEntry[] = []
  for (const d of v.slice(0, max)) {
    const o = obj(d)
    const id = o && str(o.id, MAX_ID)
    if (!o || !id || typeof o.online !== 'boolean') continue
    out.push({ id, online: o.online, link: str(o.link, 64), firmware: str(o.firmware, 64), lastSeen: isoOf(o.lastSeen) })
  }
  return out
}

function alertEntry(v: unknown): AlertEntry | null {
  const o = obj(v)
  const id = o && str(o.id, 200)
  if (!o || !id) return null
  return { id, rule: str(o.rule, 64) ?? '', severity: str(o.severity, 16) ?? 'warning', since: isoOf(o.since), text: str(o.text) ?? '', device: str(o.device, MAX_ID), upstream: str(o.upstream, 64) }
}

function alertList(v: unknown, max: number): AlertEntry[] | null {
  if (!Array.isArray(v)) return null
  return v.slice(0, max).map(alertEntry).filter((a): a is AlertEntry => a !== null)
}

export function decodeLifecycle(raw: RawLifecycle, limits: DecodeLimits): Decoded {
  const props = raw.applicationProperties ?? {}
  const claimed = typeof props.gateway === 'string' && GATEWAY_ID_RE.test(props.gateway) ? props.gateway : null
  const refuse = (reason: RefusalReason, detail: string): Decoded => ({ ok: false, reason, detail, gateway: claimed })
  const body = bodyObject(raw.body)
  if (!body) return refuse('malformed', 'the body is not a JSON object')
  if (!claimed) return refuse('malformed', 'application property "gateway" missing or not a gateway id')
  if (body.gateway !== claimed) return refuse('spoofed', `the body speaks for "${String(body.gateway).slice(0, 64)}", the application properties for "${claimed}"`)
  if (raw.routedFor !== null && raw.routedFor !== claimed) return refuse('spoofed', `routed as gateway "${raw.routedFor}", but claims gateway "${claimed}"`)
  // Older gateways (before the lifecycle schema) send `status` heartbeats with the kind in the subject only.
  const kind = (typeof body.kind === 'string' ? body.kind : typeof props.kind === 'string' ? props.kind : typeof raw.subject === 'string' ? raw.subject : '') as Kind
  if (!KINDS.includes(kind)) return refuse('unknown_kind', `kind "${String(kind).slice(0, 32)}"`)
  if (body.schema !== undefined && body.schema !== 1) return refuse('schema', `schema ${String(body.schema).slice(0, 16)} is not supported (1 is)`)
  const ttlSeconds = nonNeg(body.ttlSeconds) ?? (raw.ttlMs !== null && raw.ttlMs > 0 ? raw.ttlMs / 1000 : null)
  const bootId = str(body.bootId, 64)
  const base: Base = { gateway: claimed, at: timeOf(body.at), bootId, ttlSeconds: ttlSeconds !== null && ttlSeconds > 0 ? ttlSeconds : null }
  switch (kind) {
    case 'birth':
      return { ok: true, message: { ...base, kind, version: str(body.version, 64), configDigest: str(body.configDigest, 64), heartbeatSeconds: nonNeg(body.heartbeatSeconds), devices: deviceList(body.devices, limits.maxDevices) } }
    case 'status': {
      const b = obj(body.backlog)
      const backlog = b ? { depth: nonNeg(b.depth) ?? 0, bytes: nonNeg(b.bytes) ?? 0, oldestAgeSeconds: nonNeg(b.oldestAgeSeconds) ?? 0, deadLettered: nonNeg(b.deadLettered) ?? 0 } : null
      const upstreams = Array.isArray(body.upstreams) ? body.upstreams.slice(0, 32).map(obj).filter((u): u is Record<string, unknown> => u !== null && typeof u.name === 'string')
        .map((u) => ({ name: str(u.name, 64)!, connected: u.connected === true, lag: nonNeg(u.lag) })) : []
      return { ok: true, message: { ...base, kind, version: str(body.version, 64), uptimeSeconds: nonNeg(body.uptimeSeconds), devicesOnline: nonNeg(body.devicesOnline), devicesTotal: nonNeg(body.devicesTotal), backlog, upstreams, devices: deviceList(body.devices, limits.maxDevices), alerts: alertList(body.alerts, limits.maxAlerts) } }
    }
    case 'presence': {
      const device = str(body.device, MAX_ID)
      if (!device || typeof body.online !== 'boolean') return refuse('malformed', 'presence needs "device" and boolean "online"')
      return { ok: true, message: { ...base, kind, device, online: body.online, link: str(body.link, 64), reason: str(body.reason) } }
    }
    case 'alert': {
      const alert = alertEntry(body.alert)
      if (!alert || (body.event !== 'raised' && body.event !== 'cleared')) return refuse('malformed', 'alert needs "event" raised|cleared and an "alert" with an id')
      return { ok: true, message: { ...base, kind, event: body.event, text: str(body.text) ?? alert.text, alert } }
    }
    case 'death':
      return { ok: true, message: { ...base, kind, reason: str(body.reason, 100) ?? 'shutdown' } }
  }
}
