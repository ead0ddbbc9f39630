// The one normalised type every device link ends in, and the pure decoding of MQTT telemetry into it.

export type MetricValue = number | string | boolean
export type Metrics = Record<string, MetricValue>

/**
 * What a device link hands to the outbox: the telemetry payload as received. It is decoded (decodeTelemetry) on
 * the outbox worker thread, so the broker thread only copies bytes.
 */
export interface RawReading {
  device: string
  link: string
  payload: Uint8Array
  /** MQTT 5 user properties of the publish, checked (gateway/user-properties.ts): JSON text of name -> value. */
  userProperties?: string
}

/** A decoded reading, as the outbox stores it. */
export interface ReadingInput {
  device: string
  /** Device clock (ms since epoch) when the device sent `ts`, else the gateway's receive time. */
  ts: number
  /** The device's own sequence number, when it sends one. */
  deviceSeq: number | null
  /** 'json': payload is a JSON object of metrics; 'raw': opaque bytes stored as received. */
  kind: 'json' | 'raw'
  payload: string | Uint8Array
  /** Which link produced it (mqtt, serial, firmata): for metrics and the dashboard. */
  link: string
  /** The priority lane: claimed before routine readings (outbox.priority in the config). */
  priority?: boolean
  /** The reading's metadata: MQTT 5 user properties, JSON text of name -> value (gateway/user-properties.ts). */
  userProperties?: string
}

/** A reading as stored and forwarded: the input plus what the outbox assigned. */
export interface Reading extends ReadingInput {
  /** Outbox row id: global append order. */
  rowId: number
  /** Per-device sequence assigned by the gateway at commit: never reused, survives restarts. */
  seq: number
  /** Stable message id `<gateway>:<device>:<seq>` so consumers can deduplicate replays. */
  msgId: string
  receivedAt: number
}

export function messageId(gatewayId: string, device: string, seq: number): string {
  return `${gatewayId}:${device}:${seq}`
}

export type DecodeResult =
  | { ok: true; reading: ReadingInput }
  | { ok: false; reason: string }

const MAX_METRICS = 256
const MAX_KEY = 64

/**
 * Telemetry payload: a JSON object of metric -> number | string | boolean, with optional numeric `ts`
 * (ms, or s when < 1e11) and integer `seq`. A payload that is not JSON at all (first byte not `{`) is
 * opaque and stored raw; a payload that looks like JSON but is not a valid metrics object is refused.
 */
export function decodeTelemetry(device: string, payload: Buffer, now: number, link: string, priorityMetrics?: ReadonlySet<string>): DecodeResult {
  if (payload.length === 0) return { ok: false, reason: 'empty payload' }
  let first = 0
  while (first < payload.length && (payload[first] === 0x20 || payload[first] === 0x0a || payload[first] === 0x0d || payload[first] === 0x09)) first++
  if (payload[first] !== 0x7b /* { */) {
    return { ok: true, reading: { device, ts: now, deviceSeq: null, kind: 'raw', payload: new Uint8Array(payload), link } }
  }
  const text = payload.toString('utf8')
  let obj: unknown
  try { obj = JSON.parse(text) } catch (e) {
    return { ok: false, reason: `invalid JSON: ${(e as Error).message}` }
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return { ok: false, reason: 'telemetry must be a JSON object' }
  const rec = obj as Record<string, unknown>
  let ts = now
  let deviceSeq: number | null = null
  let count = 0
  let priority = false
  for (const [k, v] of Object.entries(rec)) {
    if (k === 'ts') {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return { ok: false, reason: '"ts" must be a non-negative number (ms or s since epoch)' }
      ts = v < 1e11 ? Math.round(v * 1000) : Math.round(v)
      continue
    }
    if (k === 'seq') {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) return { ok: false, reason: '"seq" must be a non-negative integer' }
      deviceSeq = v
      continue
    }
    if (k.length === 0 || k.length > MAX_KEY) return { ok: false, reason: `metric name must be 1..${MAX_KEY} characters` }
    const t = typeof v
    if (t === 'number') {
      if (!Number.isFinite(v as number)) return { ok: false, reason: `metric "${k}" is not a finite number` }
    } else if (t !== 'string' && t !== 'boolean') {
      return { ok: false, reason: `metric "${k}" must be a number, string or boolean, got ${v === null ? 'null' : Array.isArray(v) ? 'array' : t}` }
    }
    if (++count > MAX_METRICS) return { ok: false, reason: `more than ${MAX_METRICS} metrics` }
    if (priorityMetrics?.has(k)) priority = true
  }
  if (count === 0) return { ok: false, reason: 'telemetry has no metrics' }
  return { ok: true, reading: { device, ts, deviceSeq, kind: 'json', payload: text, link, ...(priority ? { priority } : {}) } }
}

/** Metrics of a stored JSON reading (without ts/seq); raw readings have none. */
export function readingMetrics(r: Pick<Reading, 'kind' | 'payload'>): Metrics {
  if (r.kind !== 'json') return {}
  const text = typeof r.payload === 'string' ? r.payload : Buffer.from(r.payload).toString('utf8')
  const obj = JSON.parse(text) as Record<string, MetricValue>
  const { ts: _ts, seq: _seq, ...metrics } = obj
  return metrics
}

/**
 * The JSON envelope every upstream sends: `{id, device, seq, ts, receivedAt, link, deviceSeq?, metrics | raw}`
 * (raw payloads as base64). Built as text: the stored payload is already a validated JSON object, so unless it
 * holds `ts`/`seq` (or escapes that could spell them) it goes in as it is, without a parse and re-stringify per
 * reading on the forwarding path.
 */
export function readingEnvelope(r: Pick<Reading, 'msgId' | 'device' | 'seq' | 'ts' | 'receivedAt' | 'link' | 'deviceSeq' | 'kind' | 'payload'>): string {
  let head = `{"id":${JSON.stringify(r.msgId)},"device":${JSON.stringify(r.device)},"seq":${r.seq},"ts":${r.ts},"receivedAt":${r.receivedAt},"link":${JSON.stringify(r.link)}`
  if (r.deviceSeq !== null) head += `,"deviceSeq":${r.deviceSeq}`
  if (r.kind !== 'json') return `${head},"raw":"${Buffer.from(r.payload as Uint8Array).toString('base64')}"}`
  const text = typeof r.payload === 'string' ? r.payload : Buffer.from(r.payload).toString('utf8')
  const clean = !text.includes('"ts"') && !text.includes('"seq"') && !text.includes('\\u')
  return `${head},"metrics":${clean ? text : JSON.stringify(readingMetrics(r))}}`
}

export const DEVICE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/
/** A device id, or "*" for every device (rules in config that may apply to all). */
export const DEVICE_ID_OR_ALL_RE = new RegExp(`${DEVICE_ID_RE.source}|^\\*$`)
export const DEVICE_ID_RULE = 'letters, digits, "_", "." and "-", 1 to 64 characters, starting with a letter or digit'
/** A command's name, as routed to `devices/<id>/cmd/<name>` and shown in every UI. */
export const COMMAND_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/
