// Acknowledgements of one connection's fast-path telemetry: one object per connection settles every publish it
// handed to the outbox, instead of a closure per publish. At 100k publishes/s, closures held for the length of a
// commit were most of what the broker thread's young-generation GC had to copy, and its pauses sat in the ack latency.
import type { AppendOwner } from '../outbox/types.ts'

/** What the connection needs: aedes' socket and whether it is still connected, and how to fail it. */
export interface AckTarget {
  readonly connected: boolean
  write(b: Buffer): unknown
  fail(err: Error): void
  /** The ack of a QoS 1 publish the outbox refused (it does not decode); null: a plain PUBACK (MQTT 3.1.1). */
  refusedAck?(messageId: number, reason: string): Buffer | null
}

// A tag packs what settling needs (no object per publish): bits 0-15 the packet id, bit 16 QoS 1, the rest the
// payload size (below 2^36 bytes, far above any packet size limit; a double holds it exactly).
const QOS1 = 0x10000
const BYTES = 0x20000

export function ackTag(messageId: number, qos1: boolean, bytes: number): number {
  return bytes * BYTES + (qos1 ? QOS1 : 0) + (messageId & 0xffff)
}

export class FastAcks implements AppendOwner {
  /** Publishes waiting for their commit (count, bytes): beyond a bound the broker stops taking the fast path. */
  pending = 0
  pendingBytes = 0
  /** Packet ids to ack, in arrival order; a negative entry -(i+1) is the i-th special ack in `special`. */
  private ids: number[] = []
  private special: Buffer[] = []
  private readonly flushAcks = (): void => this.flush()

  constructor(private readonly target: AckTarget) {}

  take(tag: number): void {
    this.pending++
    this.pendingBytes += Math.floor(tag / BYTES)
  }

  settled(tag: number, err: Error | null, refused?: string): void {
    this.pending--
    this.pendingBytes -= Math.floor(tag / BYTES)
    // as aedes does with a failed publish: the connection ends without an ack, the device resends later
    if (err) { this.target.fail(err); return }
    if ((tag & QOS1) === 0) return
    let entry = tag & 0xffff
    if (refused !== undefined) {
      const ack = this.target.refusedAck?.(entry, refused)
      if (ack) entry = -this.special.push(ack)
    }
    if (this.ids.push(entry) === 1) process.nextTick(this.flushAcks)
  }

  /** The PUBACKs of one commit go out as one write, in the order the publishes arrived (MQTT-4.6.0-2). */
  private flush(): void {
    const ids = this.ids
    const special = this.special
    this.ids = []
    if (special.length) this.special = []
    if (!this.target.connected) return
    let size = ids.length * 4
    for (const s of special) size += s.length - 4
    const b = Buffer.allocUnsafe(size)
    for (let i = 0, o = 0; i < ids.length; i++) {
      const id = ids[i]!
      if (id < 0) { o += special[-id - 1]!.copy(b, o); continue }
      b[o] = 0x40; b[o + 1] = 0x02; b[o + 2] = id >> 8; b[o + 3] = id & 0xff
      o += 4
    }
    this.target.write(b)
  }
}
