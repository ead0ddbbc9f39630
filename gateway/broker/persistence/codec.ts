// The JSON tag codec of the broker persistence: a packet is stored as a JSON document of its own enumerable fields
// plus its publish payload as a BLOB. JSON cannot hold Buffers (MQTT 5 correlation data, binary user values),
// undefined (aedes-packet sets `messageId: undefined`, and its presence matters) or NaN/Infinity/BigInt, so those are
// tagged and come back as they went in; functions (aedes' QoSPacket.writeCallback) and symbols are not state and are
// dropped. Pure: no SQLite, no aedes.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

// Tagged values are objects with exactly one of these keys; real keys starting with '$' are
// escaped with one more '$', so a tag can never be confused with data.
const TAG_UNDEFINED = '$u'
const TAG_BUFFER = '$b'
const TAG_NUMBER = '$n' // NaN / Infinity
const TAG_BIGINT = '$i'
const TAG_PAYLOAD = '$p' // the top-level payload, stored in the BLOB column
const TAGS = new Set([TAG_UNDEFINED, TAG_BUFFER, TAG_NUMBER, TAG_BIGINT, TAG_PAYLOAD])
const OMIT = Symbol('omit')

const escapeKey = (key: string): string => (key.startsWith('$') ? `$${key}` : key)
const unescapeKey = (key: string): string => (key.startsWith('$') ? key.slice(1) : key)

/** `obj[key] = value`, except that a key "__proto__" (an MQTT 5 user property may be named so) stays an own key. */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
  else obj[key] = value
}

function encodeValue(value: unknown, seen: Set<object>): Json | typeof OMIT {
  switch (typeof value) {
    case 'undefined': return { [TAG_UNDEFINED]: 1 }
    case 'boolean':
    case 'string': return value
    case 'number': return Number.isFinite(value) ? value : { [TAG_NUMBER]: String(value) }
    case 'bigint': return { [TAG_BIGINT]: value.toString() }
    case 'function':
    case 'symbol': return OMIT
  }
  if (value === null) return null
  if (value instanceof Uint8Array) {
    return { [TAG_BUFFER]: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') }
  }
  const obj = value as object
  if (seen.has(obj)) throw new TypeError('cannot persist a packet with a circular reference')
  seen.add(obj)
  try {
    if (Array.isArray(obj)) {
      return obj.map((item: unknown) => {
        const enc = encodeValue(item, seen)
        return enc === OMIT ? null : enc
      })
    }
    const out: { [key: string]: Json } = {}
    for (const [key, item] of Object.entries(obj)) {
      const enc = encodeValue(item, seen)
      if (enc !== OMIT) setOwn(out, escapeKey(key), enc)
    }
    return out
  } finally {
    seen.delete(obj)
  }
}

function decodeValue(value: Json, payload: Buffer | null): unknown {
  if (value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) return value.map((item) => decodeValue(item, null))
  const keys = Object.keys(value)
  const tag = keys.length === 1 ? keys[0] : undefined
  if (tag !== undefined && TAGS.has(tag)) {
    const tagged = value[tag]
    switch (tag) {
      case TAG_UNDEFINED: return undefined
      case TAG_BUFFER: return Buffer.from(String(tagged), 'base64')
      case TAG_NUMBER: return Number(tagged)
      case TAG_BIGINT: return BigInt(String(tagged))
      case TAG_PAYLOAD: return payload ?? Buffer.alloc(0)
    }
  }
  const out: Record<string, unknown> = {}
  for (const key of keys) {
    const item = value[key]
    if (item !== undefined) setOwn(out, unescapeKey(key), decodeValue(item, null))
  }
  return out
}

export interface EncodedPacket {
  json: string
  /** The top-level `payload` when it is binary (it goes to the BLOB column); null otherwise. */
  payload: Buffer | null
}

/** Encodes a packet's own enumerable fields (minus `omit`); a binary payload goes to the BLOB. */
export function encodePacket(packet: object, omit?: string): EncodedPacket {
  const doc: { [key: string]: Json } = {}
  let payload: Buffer | null = null
  const seen = new Set<object>([packet])
  for (const [key, value] of Object.entries(packet)) {
    if (key === omit) continue
    if (key === 'payload' && value instanceof Uint8Array) {
      payload = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)
      doc[escapeKey(key)] = { [TAG_PAYLOAD]: 1 }
      continue
    }
    const enc = encodeValue(value, seen)
    if (enc !== OMIT) setOwn(doc, escapeKey(key), enc)
  }
  return { json: JSON.stringify(doc), payload }
}

/** The packet encodePacket encoded, as a plain object (the caller knows which packet shape it stored). */
export function decodePacket(json: string, payload: Buffer | null): Record<string, unknown> {
  const doc = JSON.parse(json) as Json
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new Error('corrupt persisted packet: not an object')
  }
  // The top level is decoded here (not by decodeValue) so that the payload tag is honoured only
  // for the `payload` field itself.
  const out: Record<string, unknown> = {}
  for (const [escaped, item] of Object.entries(doc)) {
    const key = unescapeKey(escaped)
    const isPayloadTag = key === 'payload' && item !== null && typeof item === 'object' && !Array.isArray(item) &&
      Object.keys(item).length === 1 && TAG_PAYLOAD in item
    setOwn(out, key, isPayloadTag ? (payload ?? Buffer.alloc(0)) : decodeValue(item, null))
  }
  return out
}

/** A subscription's rh / rap / nl as JSON text, so that booleans, numbers and absence (null) all round-trip. */
export function jsonColumn(value: unknown): string | null {
  if (value === undefined) return null
  return JSON.stringify(value) ?? null
}

export function fromJsonColumn<T>(text: string | null): T | undefined {
  return text === null ? undefined : JSON.parse(text) as T
}
