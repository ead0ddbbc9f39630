// Pure topic policy: which device a topic belongs to and what a device may publish or subscribe to.

export const DEVICE_PREFIX = 'devices/'

export interface DeviceTopic { device: string; rest: string }

/** `devices/<id>/<rest>` -> { device, rest }; anything else -> null. */
export function parseDeviceTopic(topic: string): DeviceTopic | null {
  if (!topic.startsWith(DEVICE_PREFIX)) return null
  const slash = topic.indexOf('/', DEVICE_PREFIX.length)
  if (slash <= DEVICE_PREFIX.length || slash === topic.length - 1) return null
  return { device: topic.slice(DEVICE_PREFIX.length, slash), rest: topic.slice(slash + 1) }
}

export type TopicKind = 'telemetry' | 'state' | 'cmd' | 'cmd_result' | 'errors' | 'ota_request' | 'ota_status' | 'ota_downlink' | 'ota_other' | 'other'

/** OTA (see devices/ota/README.md): the gateway publishes announce and chunk, the device publishes request and status. */
const OTA_DOWNLINK = new Set(['ota/announce', 'ota/chunk'])

export function topicKind(rest: string): TopicKind {
  if (rest === 'telemetry') return 'telemetry'
  if (rest === 'state') return 'state'
  if (rest === 'errors') return 'errors'
  if (rest === 'ota/request') return 'ota_request'
  if (rest === 'ota/status') return 'ota_status'
  if (OTA_DOWNLINK.has(rest)) return 'ota_downlink'
  if (rest === 'ota' || rest.startsWith('ota/')) return 'ota_other'
  if (rest.startsWith('cmd/')) {
    const parts = rest.split('/')
    if (parts.length === 2 && parts[1]) return 'cmd'
    if (parts.length === 3 && parts[1] && parts[2] === 'result') return 'cmd_result'
  }
  return 'other'
}

export interface ClassifiedTopic extends DeviceTopic { kind: TopicKind }

/** parseDeviceTopic plus topicKind: the broker classifies each publish once and hands it to mayPublish. */
export function classifyTopic(topic: string): ClassifiedTopic | null {
  // one object per publish: this runs for every message on the broker thread
  const t = parseDeviceTopic(topic) as ClassifiedTopic | null
  if (t) t.kind = topicKind(t.rest)
  return t
}

export type Decision = { ok: true } | { ok: false; reason: string }

const allow: Decision = { ok: true }

/** A device publishes only under its own `devices/<id>/`, and never onto its own downlink or error topics. */
export function mayPublish(device: string, topic: string, t: ClassifiedTopic | null = classifyTopic(topic)): Decision {
  if (topic.startsWith('$')) return { ok: false, reason: 'publishing to $-topics is not allowed' }
  if (!t || t.device !== device) return { ok: false, reason: `device "${device}" may only publish under devices/${device}/` }
  const kind = t.kind
  if (kind === 'cmd') return { ok: false, reason: 'command topics are downlink only' }
  if (kind === 'errors') return { ok: false, reason: 'the errors topic is written by the gateway only' }
  if (kind === 'ota_downlink') return { ok: false, reason: 'ota announce and chunk topics are written by the gateway only' }
  if (kind === 'ota_other') return { ok: false, reason: `a device publishes only ota/request and ota/status under devices/${device}/ota/` }
  return allow
}

/** A device subscribes only to its own commands, errors, retained state and OTA downlink: no wildcards above that. */
export function maySubscribe(device: string, filter: string): Decision {
  const own = `${DEVICE_PREFIX}${device}/`
  if (filter.startsWith(own)) {
    const rest = filter.slice(own.length)
    if (rest === 'errors' || rest === 'state' || rest.startsWith('cmd/') || OTA_DOWNLINK.has(rest)) return allow
  }
  return { ok: false, reason: `device "${device}" may only subscribe to ${own}cmd/..., ${own}errors, ${own}state, ${own}ota/announce and ${own}ota/chunk` }
}

/**
 * Whether a subscription filter can match some device's telemetry topic (`devices/<id>/telemetry`): the broker
 * hands telemetry to aedes' publish path only while such a subscriber exists. `$share/<group>/` is looked through.
 */
export function mayMatchTelemetry(filter: string): boolean {
  const f = filter.startsWith('$share/') ? filter.split('/').slice(2) : filter.split('/')
  if (f[0]?.startsWith('$')) return false
  const pattern = ['devices', null, 'telemetry']
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= pattern.length) return false
    if (f[i] === '+') continue
    const want = pattern[i]
    if (want !== null && f[i] !== want) return false
    if (want === null && f[i] === '') return false
  }
  return f.length === pattern.length
}
