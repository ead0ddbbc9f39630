// OTA wire format (pure): topics, the announce and status JSON, the request JSON and the binary chunk reply.
// Documented for firmware authors in devices/ota/README.md; keep both in step.

export const OTA_PROTOCOL_VERSION = 1
/** First 4 bytes of every chunk reply ("EWO1"): lets firmware reject anything that is not a version-1 chunk. */
export const CHUNK_MAGIC = Buffer.from('EWO1', 'ascii')
export const CHUNK_HEADER_BYTES = 12
export const MIN_CHUNK_SIZE = 256
export const MAX_CHUNK_SIZE = 64 * 1024
/** A device may keep at most this many requests outstanding; more are still served, but this is the documented budget. */
export const MAX_WINDOW = 8

/** Downlink: the gateway publishes, the device subscribes. Uplink: the device publishes. */
export const otaTopics = (device: string) => ({
  announce: `devices/${device}/ota/announce`,
  chunk: `devices/${device}/ota/chunk`,
  request: `devices/${device}/ota/request`,
  status: `devices/${device}/ota/status`,
})

export const OTA_DOWNLINK = ['announce', 'chunk'] as const
export const OTA_UPLINK = ['request', 'status'] as const

export interface Announce {
  v: number
  job: number
  version: string
  size: number
  sha256: string
  chunkSize: number
  /** Base64 of the signature file, passed through untouched: the firmware verifies it with its own key. */
  signature: string | null
}

export function encodeAnnounce(a: Omit<Announce, 'v'>): string {
  return JSON.stringify({ v: OTA_PROTOCOL_VERSION, ...a })
}

/** The same checks a firmware makes: used by the simulated node and the unit tests. */
export function decodeAnnounce(payload: Buffer | string): Announce | null {
  if (payload.length === 0) return null
  const m = parseObject(payload)
  if (!m) throw new Error('announce is not a JSON object')
  if (m.v !== OTA_PROTOCOL_VERSION) throw new Error(`unsupported OTA protocol version ${String(m.v)}`)
  if (!isU32(m.job) || typeof m.version !== 'string' || !isU32(m.size) || typeof m.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(m.sha256)
    || !isU32(m.chunkSize) || (m.signature !== null && typeof m.signature !== 'string')) throw new Error('announce has missing or malformed fields')
  return { v: m.v, job: m.job, version: m.version, size: m.size, sha256: m.sha256, chunkSize: m.chunkSize, signature: m.signature as string | null }
}

/** Chunk reply: "EWO1" | job u32 BE | offset u32 BE | data. */
export function chunkHeader(job: number, offset: number, into: Buffer = Buffer.allocUnsafe(CHUNK_HEADER_BYTES)): Buffer {
  CHUNK_MAGIC.copy(into, 0)
  into.writeUInt32BE(job, 4)
  into.writeUInt32BE(offset, 8)
  return into
}

export function encodeChunk(job: number, offset: number, data: Buffer): Buffer {
  const b = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + data.length)
  chunkHeader(job, offset, b)
  data.copy(b, CHUNK_HEADER_BYTES)
  return b
}

export function decodeChunk(payload: Buffer): { job: number; offset: number; data: Buffer } {
  if (payload.length < CHUNK_HEADER_BYTES || !payload.subarray(0, 4).equals(CHUNK_MAGIC)) throw new Error('not an OTA chunk (bad magic or too short)')
  return { job: payload.readUInt32BE(4), offset: payload.readUInt32BE(8), data: payload.subarray(CHUNK_HEADER_BYTES) }
}

export interface ChunkRequest { job: number; offset: number; length: number | null }

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string }

export function encodeRequest(r: ChunkRequest): string {
  return JSON.stringify(r.length === null ? { job: r.job, offset: r.offset } : r)
}

export function parseRequest(payload: Buffer | string): Parsed<ChunkRequest> {
  const m = parseObject(payload)
  if (!m) return { ok: false, error: 'request is not a JSON object' }
  if (!isU32(m.job)) return { ok: false, error: 'request.job must be the job number from the announce' }
  if (!isU32(m.offset)) return { ok: false, error: 'request.offset must be a non-negative integer' }
  if (m.length !== undefined && m.length !== null && (!isU32(m.length) || m.length === 0)) return { ok: false, error: 'request.length must be a positive integer' }
  return { ok: true, value: { job: m.job, offset: m.offset, length: typeof m.length === 'number' ? m.length : null } }
}

/** Which bytes to send for a request: clipped to the image and to the job's chunk size. */
export function chunkRange(req: ChunkRequest, size: number, chunkSize: number): Parsed<{ offset: number; length: number }> {
  if (req.offset >= size) return { ok: false, error: `offset ${req.offset} is past the end of the image (${size} bytes)` }
  const length = Math.min(req.length ?? chunkSize, chunkSize, size - req.offset)
  return { ok: true, value: { offset: req.offset, length } }
}

export type DeviceStatus =
  | { job: number; state: 'downloading'; offset: number }
  | { job: number; state: 'applied' }
  | { job: number; state: 'failed'; reason: string }

export function encodeStatus(s: DeviceStatus): string { return JSON.stringify(s) }

export function parseStatus(payload: Buffer | string): Parsed<DeviceStatus> {
  const m = parseObject(payload)
  if (!m) return { ok: false, error: 'status is not a JSON object' }
  if (!isU32(m.job)) return { ok: false, error: 'status.job must be the job number from the announce' }
  switch (m.state) {
    case 'downloading':
      if (!isU32(m.offset)) return { ok: false, error: 'a downloading status needs offset (bytes verified so far)' }
      return { ok: true, value: { job: m.job, state: 'downloading', offset: m.offset } }
    case 'applied': return { ok: true, value: { job: m.job, state: 'applied' } }
    case 'failed': {
      const reason = typeof m.reason === 'string' && m.reason ? m.reason.slice(0, 500) : 'no reason given'
      return { ok: true, value: { job: m.job, state: 'failed', reason } }
    }
    default: return { ok: false, error: `status.state must be downloading, applied or failed (got ${JSON.stringify(m.state)?.slice(0, 40)})` }
  }
}

/** `devices/<id>/state` after a reboot: `{"firmware": "1.2.0", "healthy": true}` (also `fw`). */
export function parseFirmwareReport(payload: Buffer | string): { version: string; healthy: boolean | null } | null {
  if (payload.length === 0 || payload.length > 4096) return null
  const m = parseObject(payload)
  if (!m) return null
  const fw = m.firmware ?? m.fw
  if (typeof fw !== 'string' || fw.length === 0 || fw.length > 64) return null
  return { version: fw, healthy: typeof m.healthy === 'boolean' ? m.healthy : null }
}

function parseObject(payload: Buffer | string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(payload.toString())
    return v && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : null
  } catch { return null }
}

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff
}
