// MQTT 5 User Properties on a telemetry publish: kept as the reading's metadata (checked at intake, stored with the
// reading in the outbox, forwarded by upstreams that can carry them). Pure code, no I/O.

/** A reading's user properties, name -> value, as stored (JSON text of this object) and forwarded. */
export type UserProperties = Record<string, string>

/** At most this many per reading: metadata, not a second payload. */
export const MAX_USER_PROPERTIES = 16
/** At most this many bytes of names and values (UTF-8) per reading. */
export const MAX_USER_PROPERTY_BYTES = 1024

/**
 * Names a device may not use: the gateway's own per-reading properties (the AMQP application properties it sets),
 * anything starting with `edgeway` (kept for the gateway's later ones) or `x-` (what brokers read as their own
 * headers, e.g. RabbitMQ's `x-delay`, `x-death`), and `__proto__` (an object key that is not one). Case-insensitive:
 * a consumer may look names up either way.
 */
const RESERVED = new Set(['gateway', 'device', 'seq', 'deviceseq', 'link', '__proto__'])

export function isReservedPropertyName(name: string): boolean {
  const n = name.toLowerCase()
  return RESERVED.has(n) || n.startsWith('x-') || n.startsWith('edgeway')
}

/**
 * Why a set of user properties is refused: `quota` (more than MAX_USER_PROPERTIES or MAX_USER_PROPERTY_BYTES; MQTT 5
 * PUBACK 0x97 Quota exceeded) or `name` (empty, reserved or repeated; PUBACK 0x83 Implementation specific error).
 */
export type UserPropertiesCheck =
  | { ok: true; text: string }
  | { ok: false; kind: 'quota' | 'name'; reason: string }

/**
 * Checks the user properties of a PUBLISH as mqtt-packet parses them (a repeated name becomes an array) and returns
 * them as the JSON text the outbox stores.
 */
export function checkUserProperties(props: Readonly<Record<string, string | string[]>>): UserPropertiesCheck {
  const names = Object.keys(props)
  let count = 0
  let bytes = 0
  for (const name of names) {
    const v = props[name]!
    count += Array.isArray(v) ? v.length : 1
    bytes += Buffer.byteLength(name) * (Array.isArray(v) ? v.length : 1)
    for (const s of Array.isArray(v) ? v : [v]) bytes += Buffer.byteLength(s)
  }
  if (count > MAX_USER_PROPERTIES) return { ok: false, kind: 'quota', reason: `${count} user properties: at most ${MAX_USER_PROPERTIES} per reading` }
  if (bytes > MAX_USER_PROPERTY_BYTES) return { ok: false, kind: 'quota', reason: `user properties of ${bytes} bytes: at most ${MAX_USER_PROPERTY_BYTES} per reading` }
  const out = Object.create(null) as UserProperties
  for (const name of names) {
    const v = props[name]!
    if (name.length === 0) return { ok: false, kind: 'name', reason: 'a user property has an empty name' }
    if (isReservedPropertyName(name)) return { ok: false, kind: 'name', reason: `user property "${name.slice(0, 64)}" is reserved for the gateway` }
    if (Array.isArray(v)) return { ok: false, kind: 'name', reason: `user property "${name.slice(0, 64)}" is given ${v.length} times: names must be unique` }
    out[name] = v
  }
  return { ok: true, text: JSON.stringify(out) }
}

/** The stored JSON text back as an object (a plain object: names are data, never prototype members). */
export function parseUserProperties(text: string): UserProperties {
  const parsed = JSON.parse(text) as Record<string, unknown>
  const out = Object.create(null) as UserProperties
  for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') out[k] = v
  return out
}
