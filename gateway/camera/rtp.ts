// Pure RTP/RTCP byte handling for forwarding a source's H.264 stream to WebRTC viewers without transcoding.
// RFC 3550 (RTP header, RTCP), RFC 4585 (PLI, NACK), RFC 5104 (FIR), RFC 6184 (H.264 payload: STAP-A, FU-A).

export interface RtpHeader {
  marker: boolean
  payloadType: number
  seq: number
  timestamp: number
  ssrc: number
  /** Where the payload starts (after CSRCs and the header extension). */
  payloadOffset: number
  /** Payload length without padding. */
  payloadLength: number
}

/** The RTP header of `buf`, or null when it is not an RTP packet (wrong version, truncated, or RTCP). */
export function parseRtp(buf: Uint8Array): RtpHeader | null {
  if (buf.length < 12) return null
  const b0 = buf[0]!, b1 = buf[1]!
  if (b0 >> 6 !== 2) return null
  // RTCP sent to the same port (rtcp-mux style): packet types 200-207 look like marker + PT 72-79.
  if (b1 >= 200 && b1 <= 207) return null
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  let offset = 12 + (b0 & 0x0f) * 4
  if (b0 & 0x10) {
    if (buf.length < offset + 4) return null
    offset += 4 + view.getUint16(offset + 2) * 4
  }
  let end = buf.length
  if (b0 & 0x20) {
    const pad = buf[buf.length - 1]!
    if (pad === 0) return null
    end -= pad
  }
  if (offset > end) return null
  return {
    marker: (b1 & 0x80) !== 0,
    payloadType: b1 & 0x7f,
    seq: view.getUint16(2),
    timestamp: view.getUint32(4),
    ssrc: view.getUint32(8),
    payloadOffset: offset,
    payloadLength: end - offset,
  }
}

const IDR = 5
const SPS = 7
const STAP_A = 24
const FU_A = 28

/**
 * True when this H.264 RTP payload starts a keyframe (an SPS, or the first fragment of an IDR slice): the point from
 * which a new viewer can decode. A viewer that starts mid-GOP only gets undecodable frames until then.
 */
export function startsKeyframe(payload: Uint8Array): boolean {
  if (payload.length < 1) return false
  const type = payload[0]! & 0x1f
  if (type === IDR || type === SPS) return true
  if (type === FU_A) {
    if (payload.length < 2) return false
    const fu = payload[1]!
    return (fu & 0x80) !== 0 && ((fu & 0x1f) === IDR || (fu & 0x1f) === SPS)
  }
  if (type === STAP_A) {
    // STAP-A: [header][size16][nal]...; a keyframe if it aggregates an SPS or an IDR slice.
    let i = 1
    while (i + 2 < payload.length) {
      const size = (payload[i]! << 8) | payload[i + 1]!
      if (size === 0 || i + 2 + size > payload.length) return false
      const t = payload[i + 2]! & 0x1f
      if (t === IDR || t === SPS) return true
      i += 2 + size
    }
  }
  return false
}

/**
 * Rewrites the source's packets into one continuous outgoing stream: the SSRC and payload type announced to the
 * viewers, and sequence numbers and timestamps that continue across source restarts (a restarted ffmpeg picks a new
 * random SSRC, sequence and timestamp base; a browser's jitter buffer would discard or stall on such a jump).
 * The first source keeps its own numbering (offsets 0), so RTP timestamps seen by the browser match the source's.
 */
export class RtpRewriter {
  private sourceSsrc: number | null = null
  private seqDelta = 0
  private tsDelta = 0
  private lastSeq = -1
  private lastTs = 0
  private lastAt = 0

  constructor(private readonly ssrc: number, private readonly payloadType: number) {}

  /** Forget the source: the next packet re-anchors the numbering (call when the source process is restarted). */
  newSource(): void { this.sourceSsrc = null }

  /** Rewrites `buf` in place (it must hold a valid RTP packet, see parseRtp). */
  rewrite(buf: Uint8Array, h: RtpHeader, nowMs: number): void {
    if (h.ssrc !== this.sourceSsrc) {
      if (this.lastSeq >= 0) {
        this.seqDelta = (this.lastSeq + 1 - h.seq) & 0xffff
        // Continue the 90 kHz clock by the wall time that passed (at least one tick).
        const gap = Math.max(1, Math.round((nowMs - this.lastAt) * 90))
        this.tsDelta = (this.lastTs + gap - h.timestamp) >>> 0
      }
      this.sourceSsrc = h.ssrc
    }
    const seq = (h.seq + this.seqDelta) & 0xffff
    const ts = (h.timestamp + this.tsDelta) >>> 0
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
    buf[1] = (buf[1]! & 0x80) | this.payloadType
    view.setUint16(2, seq)
    view.setUint32(4, ts)
    view.setUint32(8, this.ssrc)
    this.lastSeq = seq
    this.lastTs = ts
    this.lastAt = nowMs
  }
}

export interface RtcpFeedback { pli: number; fir: number; nack: number }

/** Counts keyframe requests and NACKs in a (compound) RTCP packet from a viewer; anything unparsable counts nothing. */
export function rtcpFeedback(buf: Uint8Array): RtcpFeedback {
  const out: RtcpFeedback = { pli: 0, fir: 0, nack: 0 }
  let i = 0
  while (i + 4 <= buf.length) {
    const b0 = buf[i]!
    if (b0 >> 6 !== 2) break
    const pt = buf[i + 1]!
    const fmt = b0 & 0x1f
    const len = (((buf[i + 2]! << 8) | buf[i + 3]!) + 1) * 4
    if (i + len > buf.length) break
    if (pt === 206 && fmt === 1) out.pli++
    else if (pt === 206 && fmt === 4) out.fir++
    else if (pt === 205 && fmt === 1) out.nack++
    i += len
  }
  return out
}

/** Bits per second over a sliding window of whole seconds. */
export class RateMeter {
  private readonly buckets: number[]
  private bucketStart = 0

  constructor(private readonly windowSeconds = 3) { this.buckets = new Array<number>(windowSeconds).fill(0) }

  add(bytes: number, nowMs: number): void {
    this.advance(nowMs)
    this.buckets[this.buckets.length - 1]! += bytes
  }

  /** Bits per second over the last full `windowSeconds` (the current, partial second is left out). */
  bitsPerSecond(nowMs: number): number {
    this.advance(nowMs)
    let sum = 0
    for (let i = 0; i < this.buckets.length - 1; i++) sum += this.buckets[i]!
    return Math.round((sum * 8) / Math.max(1, this.windowSeconds - 1))
  }

  private advance(nowMs: number): void {
    const sec = Math.floor(nowMs / 1000)
    if (this.bucketStart === 0) { this.bucketStart = sec; return }
    const steps = Math.min(sec - this.bucketStart, this.buckets.length)
    for (let i = 0; i < steps; i++) { this.buckets.shift(); this.buckets.push(0) }
    if (sec > this.bucketStart) this.bucketStart = sec
  }
}
