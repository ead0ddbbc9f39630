// Serial framings, pure code (no I/O): the binary COBS framing the sensor-node firmware speaks, and line-delimited
// JSON for hobby sketches. Decoders are stream Transforms that resynchronise after garbage and count what they drop.
//
// Binary frame on the wire:  0x00  COBS( [ver<<4 | type] [seq] [payload ...] [crc16 hi] [crc16 lo] )  0x00
// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over everything before it. The leading 0x00 is redundant for a clean
// line but ends any garbage that precedes the frame, so the frame itself survives it.
import { Transform, type TransformCallback } from 'node:stream'

export const PROTOCOL_VERSION = 1

export const FrameType = {
  HELLO: 1,
  READING: 2,
  ACK: 3,
  NACK: 4,
  COMMAND: 5,
  COMMAND_RESULT: 6,
} as const
export type FrameType = (typeof FrameType)[keyof typeof FrameType]
const TYPE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]))
export function frameTypeName(t: number): string { return TYPE_NAMES.get(t) ?? `type${t}` }

/** Command opcodes (first payload byte of a COMMAND frame). */
export const CommandOp = {
  SET_INTERVAL: 1, // u16 BE milliseconds
  READ_NOW: 2,
  SET_OUTPUT: 3, // u8 pin (Arduino digital pin number), u8 value 0/1
  REBOOT: 4,
} as const
export type CommandOp = (typeof CommandOp)[keyof typeof CommandOp]

/** First payload byte of a COMMAND_RESULT frame. */
export const CommandStatus = { OK: 0, UNKNOWN_OP: 1, BAD_ARGS: 2 } as const

export interface Frame {
  type: number
  seq: number
  payload: Uint8Array
}

/** Largest decoded frame (header + payload + CRC); the firmware's buffers are far smaller. */
export const MAX_FRAME = 254

export function crc16(data: Uint8Array, start = 0, end = data.length): number {
  let crc = 0xffff
  for (let i = start; i < end; i++) {
    crc ^= data[i]! << 8
    for (let b = 0; b < 8; b++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc
}

export function cobsEncode(data: Uint8Array): Buffer {
  const out = Buffer.alloc(data.length + Math.ceil(data.length / 254) + 1)
  let codeAt = 0
  let o = 1
  let code = 1
  for (const byte of data) {
    if (byte === 0) {
      out[codeAt] = code
      codeAt = o++
      code = 1
    } else {
      out[o++] = byte
      if (++code === 0xff) {
        out[codeAt] = code
        codeAt = o++
        code = 1
      }
    }
  }
  out[codeAt] = code
  return out.subarray(0, o)
}

/** null when the bytes are not valid COBS (a zero byte, or a code running past the end). */
export function cobsDecode(data: Uint8Array): Buffer | null {
  const out = Buffer.alloc(data.length)
  let o = 0
  let i = 0
  while (i < data.length) {
    const code = data[i]!
    if (code === 0 || i + code > data.length) return null
    for (let k = 1; k < code; k++) {
      const b = data[i + k]!
      if (b === 0) return null
      out[o++] = b
    }
    i += code
    if (code !== 0xff && i < data.length) out[o++] = 0
  }
  return out.subarray(0, o)
}

export function encodeFrame(f: Frame): Buffer {
  if (f.payload.length + 4 > MAX_FRAME) throw new RangeError(`frame payload too large: ${f.payload.length} bytes`)
  const raw = Buffer.alloc(f.payload.length + 4)
  raw[0] = (PROTOCOL_VERSION << 4) | (f.type & 0x0f)
  raw[1] = f.seq & 0xff
  raw.set(f.payload, 2)
  const crc = crc16(raw, 0, raw.length - 2)
  raw[raw.length - 2] = crc >> 8
  raw[raw.length - 1] = crc & 0xff
  return Buffer.concat([Buffer.of(0), cobsEncode(raw), Buffer.of(0)])
}

/** The frame inside one COBS chunk (without delimiters), or null when COBS, length, version or CRC is wrong. */
export function parseChunk(chunk: Uint8Array): Frame | null {
  const raw = cobsDecode(chunk)
  if (!raw || raw.length < 4 || raw.length > MAX_FRAME) return null
  if (raw[0]! >> 4 !== PROTOCOL_VERSION) return null
  const crc = (raw[raw.length - 2]! << 8) | raw[raw.length - 1]!
  if (crc16(raw, 0, raw.length - 2) !== crc) return null
  return { type: raw[0]! & 0x0f, seq: raw[1]!, payload: raw.subarray(2, raw.length - 2) }
}

export interface FramingStats {
  frames: number
  /** Chunks between delimiters that held no valid frame (bad COBS, bad CRC, too short or too long). */
  badFrames: number
  /** Times a valid frame was recovered from behind leading garbage, or garbage was skipped before a frame. */
  resyncs: number
}

/**
 * Bytes in, Frame objects out. Splits on 0x00; a chunk that is not a valid frame is tried again without its first
 * bytes (garbage glued to the front of a frame by a sender that does not send the leading delimiter). A CRC-16 gives
 * a 1-in-65536 chance per attempt of taking garbage for a frame; bounding attempts to MAX_FRAME keeps that rare.
 */
export class CobsDecoder extends Transform {
  readonly stats: FramingStats = { frames: 0, badFrames: 0, resyncs: 0 }
  private buf: Buffer = Buffer.alloc(0)
  /** Until the first delimiter: a port opened mid-frame starts with a frame's tail, which is not line noise. */
  private synced = false

  constructor() {
    super({ readableObjectMode: true })
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let data = this.buf.length > 0 ? Buffer.concat([this.buf, chunk]) : chunk
    let start = 0
    for (;;) {
      const z = data.indexOf(0, start)
      if (z < 0) break
      if (z > start) this.chunk(data.subarray(start, z))
      this.synced = true
      start = z + 1
    }
    data = data.subarray(start)
    // A frame never exceeds MAX_FRAME encoded bytes (+ COBS overhead): keep only the tail that could still be one.
    const keep = MAX_FRAME + 2
    if (data.length > keep) {
      this.stats.badFrames++
      this.stats.resyncs++
      data = data.subarray(data.length - keep)
    }
    this.buf = Buffer.from(data)
    cb()
  }

  private chunk(c: Buffer): void {
    const f = parseChunk(c)
    if (f) { this.stats.frames++; this.push(f); return }
    const from = Math.max(1, c.length - (MAX_FRAME + 2))
    for (let i = from; i <= c.length - 5; i++) {
      const g = parseChunk(c.subarray(i))
      if (g) {
        this.stats.resyncs++
        this.stats.frames++
        this.push(g)
        return
      }
    }
    if (this.synced) this.stats.badFrames++
    else this.stats.resyncs++
  }
}

/**
 * Line-delimited JSON for hobby sketches: each line is one JSON object, emitted as its bytes (the outbox decodes
 * it). Lines that do not start with `{` (boot banners, debug prints) are counted as bad and skipped.
 */
export class JsonLineDecoder extends Transform {
  readonly stats: FramingStats = { frames: 0, badFrames: 0, resyncs: 0 }
  private buf: Buffer = Buffer.alloc(0)

  constructor(private readonly maxLine = 4096) {
    super({ readableObjectMode: true })
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const data = this.buf.length > 0 ? Buffer.concat([this.buf, chunk]) : chunk
    let start = 0
    for (;;) {
      const nl = data.indexOf(0x0a, start)
      if (nl < 0) break
      this.line(data.subarray(start, nl))
      start = nl + 1
    }
    let rest = data.subarray(start)
    if (rest.length > this.maxLine) {
      this.stats.badFrames++
      this.stats.resyncs++
      rest = Buffer.alloc(0)
    }
    this.buf = Buffer.from(rest)
    cb()
  }

  private line(l: Buffer): void {
    let s = 0
    let e = l.length
    while (s < e && (l[s] === 0x20 || l[s] === 0x09 || l[s] === 0x0d)) s++
    while (e > s && (l[e - 1] === 0x20 || l[e - 1] === 0x09 || l[e - 1] === 0x0d)) e--
    if (s === e) return
    if (l[s] !== 0x7b || l[e - 1] !== 0x7d || e - s > this.maxLine) { this.stats.badFrames++; return }
    this.stats.frames++
    this.push(Buffer.from(l.subarray(s, e)))
  }
}

/**
 * READING payload: repeated [name length u8][name ASCII][value int32 BE]. Returns null when malformed.
 * Integers keep the firmware free of float formatting; scaling (e.g. deci-degrees) is in the metric name.
 */
export function decodeReadingPayload(p: Uint8Array): Record<string, number> | null {
  const out: Record<string, number> = {}
  let i = 0
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength)
  while (i < p.length) {
    const n = p[i]!
    if (n === 0 || i + 1 + n + 4 > p.length) return null
    const name = Buffer.from(p.subarray(i + 1, i + 1 + n)).toString('latin1')
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || name === 'seq' || name === 'ts') return null
    out[name] = dv.getInt32(i + 1 + n)
    i += 1 + n + 4
  }
  return Object.keys(out).length > 0 ? out : null
}

export function encodeReadingPayload(metrics: Record<string, number>): Buffer {
  const parts: Buffer[] = []
  for (const [k, v] of Object.entries(metrics)) {
    const name = Buffer.from(k, 'latin1')
    const b = Buffer.alloc(1 + name.length + 4)
    b[0] = name.length
    name.copy(b, 1)
    b.writeInt32BE(v | 0, 1 + name.length)
    parts.push(b)
  }
  return Buffer.concat(parts)
}

export type SerialCommand =
  | { op: 'setInterval'; ms: number }
  | { op: 'readNow' }
  | { op: 'setOutput'; pin: number; value: boolean }
  | { op: 'reboot' }

export function encodeCommand(c: SerialCommand): Buffer {
  switch (c.op) {
    case 'setInterval': {
      if (!Number.isInteger(c.ms) || c.ms < 10 || c.ms > 65535) throw new RangeError('interval must be 10..65535 ms')
      const b = Buffer.alloc(3)
      b[0] = CommandOp.SET_INTERVAL
      b.writeUInt16BE(c.ms, 1)
      return b
    }
    case 'readNow': return Buffer.of(CommandOp.READ_NOW)
    case 'setOutput': return Buffer.of(CommandOp.SET_OUTPUT, c.pin & 0xff, c.value ? 1 : 0)
    case 'reboot': return Buffer.of(CommandOp.REBOOT)
  }
}
