// Home Assistant MQTT discovery, pure mapping: a device, its metrics (with the types their readings showed) and its
// registry metadata -> discovery config objects and the topics they go to; plus the gateway's own topics and the
// role rules Home Assistant needs. No I/O: publisher.ts sends what this returns.
//
// Follows https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery: one retained config per entity on
// `<prefix>/<component>/<node_id>/<object_id>/config`, an empty retained payload removes it. Every entity has a
// `unique_id`, a `device` block (so HA groups a device's entities, linked to the gateway by `via_device`) and an
// `availability` list of two topics with `availability_mode: all`: the gateway's status (online retained at start,
// offline retained at a clean stop) and the device's presence. State comes from one gateway-written topic per device
// carrying the device's latest value of every metric as JSON, so each entity's `value_template` finds its key in
// every message (a device may send only some metrics per reading), and serial and Firmata devices, whose readings
// never cross the broker, show up too.
import { COMMAND_NAME_RE, type MetricValue } from '../../gateway/readings.ts'
import type { Role, Rule } from '../../gateway/broker/roles.ts'

export type Component = 'sensor' | 'binary_sensor' | 'button' | 'switch'
export type MetricKind = 'number' | 'string' | 'boolean'

export interface Discovery { component: Component; topic: string; config: Record<string, unknown> }

/** What the mapping needs to know about the gateway. */
export interface GatewayInfo {
  discoveryPrefix: string
  nodeId: string
  /** gateway.id, shown as the gateway device's name. */
  gatewayId: string
  /** edgeway's version: the gateway device's sw_version and every payload's origin. */
  version: string
}

/** What the mapping needs to know about a device (registry facts, when it is registered). */
export interface DeviceInfo {
  id: string
  metadata: Record<string, unknown>
  firmware: string | null
  link: string | null
}

export const ONLINE = 'online'
export const OFFLINE = 'offline'

/** The gateway's own topics. Devices and integration clients may not write them (haRoles()). */
export function gatewayTopics(g: Pick<GatewayInfo, 'nodeId' | 'discoveryPrefix'>) {
  const base = `edgeway/${g.nodeId}`
  return {
    base,
    status: `${base}/status`,
    availability: (device: string): string => `${base}/devices/${device}/availability`,
    state: (device: string): string => `${base}/devices/${device}/state`,
    /** Home Assistant's birth and will messages. */
    birth: `${g.discoveryPrefix}/status`,
  }
}

/** 8 hex digits of FNV-1a: keeps ids distinct after sanitising ("a.b" and "a_b"). */
function shortHash(s: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0 }
  return h.toString(16).padStart(8, '0')
}

/** An object id in HA's alphabet `[a-zA-Z0-9_-]`; a name that needed changes gets a hash of the original appended. */
export function objectId(...parts: string[]): string {
  const raw = parts.join('__')
  const clean = raw.replace(/[^A-Za-z0-9_-]/g, '_')
  return clean === raw && clean.length <= 120 ? clean : `${clean.slice(0, 100)}_${shortHash(raw)}`
}

export const gatewayIdentifier = (nodeId: string): string => `edgeway_${nodeId}`
export const deviceIdentifier = (nodeId: string, device: string): string => `edgeway_${nodeId}_${objectId(device)}`

const configTopic = (g: GatewayInfo, component: Component, oid: string): string => `${g.discoveryPrefix}/${component}/${g.nodeId}/${oid}/config`

/** `{{ value_json["<key>"] }}`: a JSON string is a valid Jinja string literal, whatever the metric name holds. */
const valueOf = (metric: string): string => `value_json[${JSON.stringify(metric)}]`

const origin = (g: GatewayInfo) => ({ name: 'edgeway', sw_version: g.version })

const str = (v: unknown, max = 64): string | undefined => (typeof v === 'string' && v.length > 0 ? v.slice(0, max) : undefined)

function deviceBlock(g: GatewayInfo, d: DeviceInfo): Record<string, unknown> {
  const m = d.metadata
  return {
    identifiers: [deviceIdentifier(g.nodeId, d.id)],
    name: str(m.name) ?? d.id,
    manufacturer: str(m.manufacturer) ?? 'edgeway',
    model: str(m.model) ?? 'edgeway device',
    ...(d.firmware ? { sw_version: d.firmware } : {}),
    via_device: gatewayIdentifier(g.nodeId),
  }
}

function availability(g: GatewayInfo, device: string): Record<string, unknown> {
  const t = gatewayTopics(g)
  return {
    availability: [
      { topic: t.status, payload_available: ONLINE, payload_not_available: OFFLINE },
      { topic: t.availability(device), payload_available: ONLINE, payload_not_available: OFFLINE },
    ],
    availability_mode: 'all',
  }
}

/** The gateway as a device of its own (what `via_device` points at), with one entity: its connectivity. */
export function gatewayDiscovery(g: GatewayInfo): Discovery {
  const t = gatewayTopics(g)
  return {
    component: 'binary_sensor',
    topic: configTopic(g, 'binary_sensor', 'gateway__status'),
    config: {
      name: 'Status',
      unique_id: `${gatewayIdentifier(g.nodeId)}_status`,
      state_topic: t.status,
      payload_on: ONLINE,
      payload_off: OFFLINE,
      device_class: 'connectivity',
      entity_category: 'diagnostic',
      device: { identifiers: [gatewayIdentifier(g.nodeId)], name: `edgeway ${g.gatewayId}`, manufacturer: 'edgeway', model: 'edgeway gateway', sw_version: g.version },
      origin: origin(g),
    },
  }
}

interface UnitClass { device_class?: string; state_class: 'measurement' | 'total_increasing' }

/**
 * Units -> HA sensor device classes (https://www.home-assistant.io/integrations/sensor/#device-class), where the unit
 * is one HA accepts for that class; `%` depends on the metric's name. Anything else: a plain measurement.
 */
const UNIT_CLASSES: Record<string, UnitClass> = {
  '°C': { device_class: 'temperature', state_class: 'measurement' },
  '°F': { device_class: 'temperature', state_class: 'measurement' },
  K: { device_class: 'temperature', state_class: 'measurement' },
  hPa: { device_class: 'pressure', state_class: 'measurement' },
  Pa: { device_class: 'pressure', state_class: 'measurement' },
  kPa: { device_class: 'pressure', state_class: 'measurement' },
  mbar: { device_class: 'pressure', state_class: 'measurement' },
  bar: { device_class: 'pressure', state_class: 'measurement' },
  psi: { device_class: 'pressure', state_class: 'measurement' },
  V: { device_class: 'voltage', state_class: 'measurement' },
  mV: { device_class: 'voltage', state_class: 'measurement' },
  A: { device_class: 'current', state_class: 'measurement' },
  mA: { device_class: 'current', state_class: 'measurement' },
  W: { device_class: 'power', state_class: 'measurement' },
  kW: { device_class: 'power', state_class: 'measurement' },
  Wh: { device_class: 'energy', state_class: 'total_increasing' },
  kWh: { device_class: 'energy', state_class: 'total_increasing' },
  lx: { device_class: 'illuminance', state_class: 'measurement' },
  dBm: { device_class: 'signal_strength', state_class: 'measurement' },
  Hz: { device_class: 'frequency', state_class: 'measurement' },
  'µg/m³': { state_class: 'measurement' },
}

function unitClass(metric: string, unit: string | undefined): UnitClass {
  if (unit === undefined) return { state_class: 'measurement' }
  if (unit === '%') {
    if (/humid/i.test(metric)) return { device_class: 'humidity', state_class: 'measurement' }
    if (/batt/i.test(metric)) return { device_class: 'battery', state_class: 'measurement' }
    if (/moist/i.test(metric)) return { device_class: 'moisture', state_class: 'measurement' }
    return { state_class: 'measurement' }
  }
  if (unit === 'ppm' && /co2|carbon.?dioxide/i.test(metric)) return { device_class: 'carbon_dioxide', state_class: 'measurement' }
  return UNIT_CLASSES[unit] ?? { state_class: 'measurement' }
}

/** `metadata.metrics[<metric>]`: `{ unit, name }` (the device page's editor validates the shape; read defensively). */
function metricMeta(d: DeviceInfo, metric: string): { unit?: string; name?: string } {
  const all = d.metadata.metrics
  if (!all || typeof all !== 'object' || Array.isArray(all)) return {}
  const m = (all as Record<string, unknown>)[metric]
  if (!m || typeof m !== 'object') return {}
  const r = m as { unit?: unknown; name?: unknown }
  return { ...(str(r.unit, 32) !== undefined ? { unit: str(r.unit, 32)! } : {}), ...(str(r.name) !== undefined ? { name: str(r.name)! } : {}) }
}

export const kindOf = (v: MetricValue): MetricKind => (typeof v === 'boolean' ? 'boolean' : typeof v === 'number' ? 'number' : 'string')

/** Numbers -> sensor (unit, device/state class when known), strings -> sensor without unit, booleans -> binary_sensor. */
export function metricDiscovery(g: GatewayInfo, d: DeviceInfo, metric: string, kind: MetricKind): Discovery {
  const t = gatewayTopics(g)
  const meta = metricMeta(d, metric)
  const common = {
    name: meta.name ?? metric,
    unique_id: `${deviceIdentifier(g.nodeId, d.id)}_${objectId(metric)}`,
    state_topic: t.state(d.id),
    ...availability(g, d.id),
    device: deviceBlock(g, d),
    origin: origin(g),
  }
  if (kind === 'boolean') {
    return {
      component: 'binary_sensor',
      topic: configTopic(g, 'binary_sensor', objectId(d.id, metric)),
      config: { ...common, value_template: `{{ 'ON' if ${valueOf(metric)} else 'OFF' }}`, payload_on: 'ON', payload_off: 'OFF' },
    }
  }
  const extra = kind === 'number'
    ? { ...(meta.unit !== undefined ? { unit_of_measurement: meta.unit } : {}), ...unitClass(metric, meta.unit) }
    : {}
  return {
    component: 'sensor',
    topic: configTopic(g, 'sensor', objectId(d.id, metric)),
    config: { ...common, value_template: `{{ ${valueOf(metric)} }}`, ...extra },
  }
}

/** A command as declared in `metadata.commands` that HA can drive. */
export interface HaCommand { name: string; kind: 'button' | 'switch'; label?: string; args: Record<string, unknown>; switchArg: string; stateMetric?: string }


/**
 * `metadata.commands: [{ name, kind?: "button" | "switch", description?, args?, state? }]`, read leniently (an entry
 * that does not fit is skipped, the rest still count). A button sends the declared defaults as args and is left out
 * when a required argument has no default (a press could only fail). A switch sends `{ <its one boolean arg, else
 * "on">: true | false }`; `state` names the boolean metric that reports it (without one, HA runs it optimistically).
 */
export function declaredCommands(metadata: Record<string, unknown>): HaCommand[] {
  const list = metadata.commands
  if (!Array.isArray(list)) return []
  const out: HaCommand[] = []
  for (const c of list as unknown[]) {
    if (!c || typeof c !== 'object') continue
    const e = c as { name?: unknown; kind?: unknown; description?: unknown; args?: unknown; state?: unknown }
    if (typeof e.name !== 'string' || !COMMAND_NAME_RE.test(e.name) || out.some((x) => x.name === e.name)) continue
    const kind = e.kind === 'switch' ? 'switch' : e.kind === undefined || e.kind === 'button' ? 'button' : null
    if (!kind) continue
    const specs = e.args && typeof e.args === 'object' && !Array.isArray(e.args) ? e.args as Record<string, { type?: unknown; default?: unknown; required?: unknown }> : {}
    const args: Record<string, unknown> = {}
    let unpressable = false
    const booleans: string[] = []
    for (const [arg, spec] of Object.entries(specs)) {
      if (!spec || typeof spec !== 'object') continue
      if (spec.type === 'boolean') booleans.push(arg)
      if (spec.default !== undefined) args[arg] = spec.default
      else if (spec.required === true && !(kind === 'switch' && spec.type === 'boolean')) unpressable = true
    }
    if (unpressable) continue
    const label = str(e.description) ?? undefined
    out.push({
      name: e.name, kind, args, switchArg: booleans.length === 1 ? booleans[0]! : 'on',
      ...(label ? { label } : {}), ...(typeof e.state === 'string' && e.state.length > 0 ? { stateMetric: e.state } : {}),
    })
  }
  return out
}

/** The id every HA press carries (fixed: HA sends a constant payload); the device echoes it in its result. */
export const pressId = (device: string, command: string, suffix = ''): string => `ha:${device}:${command}${suffix}`

/** The gateway's command format (README "Commands"): `{"id", "args"}` on `devices/<id>/cmd/<name>`. */
const commandPayload = (id: string, args: unknown): string => JSON.stringify({ id, args })

export function commandDiscovery(g: GatewayInfo, d: DeviceInfo, c: HaCommand): Discovery {
  const common = {
    name: c.label ?? c.name,
    unique_id: `${deviceIdentifier(g.nodeId, d.id)}_cmd_${objectId(c.name)}`,
    command_topic: `devices/${d.id}/cmd/${c.name}`,
    qos: 1,
    retain: false,
    ...availability(g, d.id),
    device: deviceBlock(g, d),
    origin: origin(g),
  }
  const oid = objectId(d.id, 'cmd', c.name)
  if (c.kind === 'button') {
    const args = Object.keys(c.args).length > 0 ? c.args : null
    return { component: 'button', topic: configTopic(g, 'button', oid), config: { ...common, payload_press: commandPayload(pressId(d.id, c.name), args) } }
  }
  const state = c.stateMetric !== undefined
    ? { state_topic: gatewayTopics(g).state(d.id), value_template: `{{ 'ON' if ${valueOf(c.stateMetric)} else 'OFF' }}`, state_on: 'ON', state_off: 'OFF' }
    : { optimistic: true }
  return {
    component: 'switch',
    topic: configTopic(g, 'switch', oid),
    config: {
      ...common,
      payload_on: commandPayload(pressId(d.id, c.name, ':on'), { ...c.args, [c.switchArg]: true }),
      payload_off: commandPayload(pressId(d.id, c.name, ':off'), { ...c.args, [c.switchArg]: false }),
      ...state,
    },
  }
}

/** Metrics declared in the metadata (known before the first reading): numbers unless a reading said otherwise. */
export function declaredMetrics(metadata: Record<string, unknown>): string[] {
  const m = metadata.metrics
  return m && typeof m === 'object' && !Array.isArray(m) ? Object.keys(m).filter((k) => k.length > 0 && k.length <= 64) : []
}

/** Every config of one device: its metrics (seen kinds, plus declared ones not seen yet) and its declared commands. */
export function deviceDiscovery(g: GatewayInfo, d: DeviceInfo, seen: ReadonlyMap<string, MetricKind>): Discovery[] {
  const kinds = new Map(seen)
  for (const m of declaredMetrics(d.metadata)) if (!kinds.has(m)) kinds.set(m, 'number')
  const out = [...kinds].map(([m, k]) => metricDiscovery(g, d, m, k))
  // Presses go straight to the device over MQTT (devices/<id>/cmd/<name>): a serial or Firmata board would not get them.
  if (d.link === null || d.link === 'mqtt') for (const c of declaredCommands(d.metadata)) out.push(commandDiscovery(g, d, c))
  return out
}

/**
 * The rules Home Assistant needs, added to the roles (pure: a new map). The built-in `observer` and `operator` (not
 * when the config replaces them) may read the discovery prefix and the gateway's topics and publish HA's birth
 * message (`<prefix>/status`); operators press buttons through the `devices/+/cmd/+` they already have. Every role,
 * and the `anonymous` one of the lab modes, is denied writing discovery configs and the gateway's own topics, so
 * nobody but the gateway can forge an entity or another device's availability.
 */
export function haRoles(roles: ReadonlyMap<string, Role>, builtins: ReadonlyMap<string, Role>, g: Pick<GatewayInfo, 'nodeId' | 'discoveryPrefix'>, anonymousRole = 'anonymous'): Map<string, Role> {
  const t = gatewayTopics(g)
  const allow: Rule[] = [
    { effect: 'allow', action: 'subscribe', topic: `${g.discoveryPrefix}/#` },
    { effect: 'allow', action: 'subscribe', topic: `${t.base}/#` },
    { effect: 'allow', action: 'publish', topic: t.birth },
  ]
  const deny: Rule[] = [
    { effect: 'deny', action: 'publish', topic: `${g.discoveryPrefix}/+/+/config` },
    { effect: 'deny', action: 'publish', topic: `${g.discoveryPrefix}/+/+/+/config` },
    { effect: 'deny', action: 'publish', topic: `${t.base}/#` },
  ]
  const out = new Map<string, Role>()
  for (const [name, role] of roles) {
    const builtin = builtins.get(name) === role
    out.set(name, { name, rules: [...role.rules, ...(builtin ? allow : []), ...deny] })
  }
  if (!out.has(anonymousRole)) out.set(anonymousRole, { name: anonymousRole, rules: deny })
  return out
}
