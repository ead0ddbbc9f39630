// The AMQP 1.0 wire encoding of the one message shape the amqp upstream sends per reading (AmqpOut), written straight
// into one Buffer. rhea's generic encoder builds a typed wrapper object per field and a Buffer per string, about
// 11 KiB of garbage per message: during a backlog drain that was a quarter of the broker thread in GC. The bytes are
// exactly what rhea.message.encode produces for the same message (test/amqp-encode.test.ts compares them), so
// receivers cannot tell the difference; rhea still does everything else (framing, links, flow, settlement).
import type { AmqpOut } from './map.ts'

// Section descriptors (small ulong) and the type codes used (AMQP 1.0 part 1).
const HEADER = 0x70
const PROPERTIES = 0x73
const APPLICATION_PROPERTIES = 0x74
const DATA = 0x75
const NULL = 0x40
const TRUE = 0x41

/** Encoded size of a string or symbol: one-byte length up to 255 bytes, else four. */
function varSize(bytes: number): number {
  return bytes > 255 ? 5 + bytes : 2 + bytes
}

/** Encoded size of a non-negative integer as rhea's types.wrap picks it: smallint 0, smalluint, uint, ulong. */
function uintSize(n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${n} is not a non-negative integer`)
  return n <= 255 ? 2 : n < 2 ** 32 ? 5 : 9
}

class Out {
  off = 0
  constructor(readonly buf: Buffer) {}
  byte(b: number): void { this.buf[this.off++] = b }
  u32(n: number): void { this.buf.writeUInt32BE(n, this.off); this.off += 4 }
  /** str8/str32 (0xa1/0xb1) or sym8/sym32 (0xa3/0xb3), by the byte length already measured. */
  text(s: string, bytes: number, symbol: boolean): void {
    if (bytes > 255) { this.byte(symbol ? 0xb3 : 0xb1); this.u32(bytes) } else { this.byte(symbol ? 0xa3 : 0xa1); this.byte(bytes) }
    this.off += this.buf.write(s, this.off, bytes, symbol ? 'ascii' : 'utf8')
  }
  uint(n: number): void {
    if (n === 0) { this.byte(0x54); this.byte(0) } // rhea wraps 0 as an int (smallint), not uint0
    else if (n <= 255) { this.byte(0x52); this.byte(n) }
    else if (n < 2 ** 32) { this.byte(0x70); this.u32(n) }
    else { this.byte(0x80); this.u32(Math.floor(n / 2 ** 32)); this.u32(n % 2 ** 32) }
  }
  /** A described list32 section header; returns where its size goes (filled in by endList). */
  beginList(descriptor: number, count: number, compound: 0xd0 | 0xd1): number {
    this.byte(0x00); this.byte(0x53); this.byte(descriptor); this.byte(compound)
    const at = this.off
    this.off += 4
    this.u32(count)
    return at
  }
  endList(at: number): void { this.buf.writeUInt32BE(this.off - at - 4, at) }
}

const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8')

/** The encoded message, for `sender.send(bytes, undefined, 0)` (format 0: a standard AMQP message). */
export function encodeReadingMessage(o: AmqpOut): Buffer {
  const ap = o.application_properties
  const lens = {
    messageId: byteLength(o.message_id), to: byteLength(o.to), subject: byteLength(o.subject), contentType: o.content_type.length,
    gateway: byteLength(ap.gateway), device: byteLength(ap.device), link: byteLength(ap.link),
  }
  const hasDeviceSeq = ap.deviceSeq !== undefined
  // With the device's user properties the map is written whole, in its key order (rhea's); else the fixed shape.
  const entries = o.userProperties ? Object.entries(ap) : null
  let apSize = 0
  if (entries) for (const [k, v] of entries) apSize += varSize(byteLength(k)) + (typeof v === 'number' ? uintSize(v) : varSize(byteLength(v)))
  else {
    apSize = varSize(7) + varSize(lens.gateway) + varSize(6) + varSize(lens.device) + varSize(3) + uintSize(ap.seq) +
      varSize(4) + varSize(lens.link) + (hasDeviceSeq ? varSize(9) + uintSize(ap.deviceSeq!) : 0)
  }
  const size =
    (3 + 9 + 1 + (o.priority !== undefined ? 2 : 0)) +
    (3 + 9 + varSize(lens.messageId) + 1 + varSize(lens.to) + varSize(lens.subject) + 2 + varSize(lens.contentType) + 2 + 9) +
    (3 + 9 + apSize) +
    (3 + varSize(o.body.length))
  const w = new Out(Buffer.allocUnsafe(size))

  // header: [durable, priority?]
  let at = w.beginList(HEADER, o.priority !== undefined ? 2 : 1, 0xd0)
  w.byte(TRUE)
  if (o.priority !== undefined) { w.byte(0x50); w.byte(o.priority) }
  w.endList(at)

  // properties: message-id, user-id, to, subject, reply-to, correlation-id, content-type, content-encoding,
  // absolute-expiry-time, creation-time (the trailing unset fields are left out, as rhea does)
  at = w.beginList(PROPERTIES, 10, 0xd0)
  w.text(o.message_id, lens.messageId, false)
  w.byte(NULL)
  w.text(o.to, lens.to, false)
  w.text(o.subject, lens.subject, false)
  w.byte(NULL); w.byte(NULL)
  w.text(o.content_type, lens.contentType, true)
  w.byte(NULL); w.byte(NULL)
  const ms = o.creation_time.getTime()
  w.byte(0x83); w.u32(Math.floor(ms / 2 ** 32)); w.u32(ms % 2 ** 32)
  w.endList(at)

  // application-properties: a map of string keys, in the object's order
  if (entries) {
    at = w.beginList(APPLICATION_PROPERTIES, entries.length * 2, 0xd1)
    for (const [k, v] of entries) {
      w.text(k, byteLength(k), false)
      if (typeof v === 'number') w.uint(v)
      else w.text(v, byteLength(v), false)
    }
  } else {
    at = w.beginList(APPLICATION_PROPERTIES, hasDeviceSeq ? 10 : 8, 0xd1)
    w.text('gateway', 7, false); w.text(ap.gateway, lens.gateway, false)
    w.text('device', 6, false); w.text(ap.device, lens.device, false)
    w.text('seq', 3, false); w.uint(ap.seq)
    w.text('link', 4, false); w.text(ap.link, lens.link, false)
    if (hasDeviceSeq) { w.text('deviceSeq', 9, false); w.uint(ap.deviceSeq!) }
  }
  w.endList(at)

  // data section: vbin8/vbin32
  w.byte(0x00); w.byte(0x53); w.byte(DATA)
  if (o.body.length > 255) { w.byte(0xb0); w.u32(o.body.length) } else { w.byte(0xa0); w.byte(o.body.length) }
  o.body.copy(w.buf, w.off)
  w.off += o.body.length
  if (w.off !== size) throw new Error(`AMQP encoding: wrote ${w.off} bytes, expected ${size}`)
  return w.buf
}
