// Flow control on what the gateway sends to one MQTT 5 connection, at the point where each PUBLISH goes on the wire
// (live deliveries, retained messages on subscribe, a persistent session's queue at reconnect all pass here):
//  - the client's Receive Maximum (MQTT 5.0 section 4.9): at most that many QoS 1/2 PUBLISHes unacknowledged; the
//    rest wait in order and go out as PUBACK/PUBCOMP (or a PUBREC >= 0x80) arrive. QoS 0 is not counted.
//  - the client's Maximum Packet Size on a replayed queue (live deliveries are checked before they get here).
//  - server-side topic aliases (topic-alias-out.ts), decided in wire order, so a client always learns an alias first.
// aedes does none of these (2.0.0-beta.1 records the client's limits only). Every call is O(1).
import { TopicAliasesOut } from './topic-alias-out.ts'
import { retainedDeadline, type WirePublish } from './aedes-adapter.ts'

export interface OutboundLimits {
  /** The client's Receive Maximum (1..65535; 65535 when it sent none). */
  receiveMaximum: number
  /** The client's Maximum Packet Size, if it sent one. */
  maximumPacketSize?: number
  /** The client's Topic Alias Maximum (0: it takes no aliases). */
  topicAliasMaximum: number
}

export type DropReason = 'too_large' | 'expired' | 'queue_full'

export interface FlowTarget {
  /** Writes the packet now; false if the socket's buffer is full (it is written anyway) or the connection is gone. */
  send(p: WirePublish): boolean
  /** Total wire size of the packet. */
  size(p: WirePublish): number
  /**
   * True while aedes writes the session's stored queue (between CONNACK and the end of the connect): only those are
   * size-checked here, live deliveries were checked before aedes assigned them a packet id.
   */
  replaying(): boolean
  /** Not sent, as if delivered: counted and logged by the caller, which removes a QoS 1/2 one from a stored session. */
  dropped(p: WirePublish, reason: DropReason, detail: string): void
}

/**
 * Messages waiting for a free slot, per connection (Mosquitto's default max_queued_messages). Beyond it the newest is
 * dropped and counted: a client that takes nothing must not hold the gateway's memory without bound.
 */
export const MAX_HELD = 1000

export class OutboundFlow {
  /** Packet ids of QoS 1/2 PUBLISHes written and not yet acknowledged. */
  private readonly inflight = new Set<number>()
  private held: WirePublish[] = []
  private head = 0
  private readonly aliases: TopicAliasesOut | null
  private readonly max: number

  constructor(private readonly limits: OutboundLimits, private readonly target: FlowTarget) {
    this.max = Math.max(1, limits.receiveMaximum)
    this.aliases = limits.topicAliasMaximum > 0 ? new TopicAliasesOut(limits.topicAliasMaximum) : null
  }

  get inFlight(): number { return this.inflight.size }
  get waiting(): number { return this.held.length - this.head }

  /** A PUBLISH aedes writes; returns what aedes' write sees (false: wait for the socket to drain). */
  publish(p: WirePublish): boolean {
    const maxSize = this.limits.maximumPacketSize
    if (maxSize !== undefined && maxSize > 0 && this.target.replaying()) {
      const size = this.target.size(p)
      if (size > maxSize) {
        this.target.dropped(p, 'too_large', `${size} bytes exceed its maximum packet size (${maxSize})`)
        return true
      }
    }
    if (p.qos === 0) return this.write(p, undefined)
    if (this.waiting === 0 && this.inflight.size < this.max) return this.sendQoS(p, undefined)
    if (this.waiting >= MAX_HELD) {
      this.target.dropped(p, 'queue_full', `${MAX_HELD} messages already wait for its Receive Maximum (${this.max})`)
      return true
    }
    // a retained message sent on subscribe has no deadline of aedes' own: the one the store kept, else (not stored by
    // the gateway's persistence) its interval from now
    if (p.messageExpiry === undefined) {
      const interval = p.properties?.messageExpiryInterval
      const deadline = retainedDeadline(p) ?? (typeof interval === 'number' && interval > 0 ? Date.now() + interval * 1000 : undefined)
      if (deadline !== undefined) p = { ...p, messageExpiry: deadline }
    }
    this.held.push(p)
    return true
  }

  /** The client acknowledged a PUBLISH: PUBACK or PUBCOMP (any code), or PUBREC with a code of 0x80 or more. */
  acked(cmd: string, messageId: number, reasonCode: number): void {
    if (cmd === 'pubrec' && reasonCode < 0x80) return
    if (!this.inflight.delete(messageId)) return
    this.release()
  }

  private release(): void {
    while (this.waiting > 0 && this.inflight.size < this.max) {
      const p = this.held[this.head]!
      this.held[this.head++] = undefined as unknown as WirePublish
      if (this.head > 64 && this.head * 2 > this.held.length) { this.held = this.held.slice(this.head); this.head = 0 }
      // MQTT 5.0 3.3.2.3.3: what waited here carries what is left of its lifetime, or goes if none is left
      let expiry: number | undefined
      if (p.messageExpiry !== undefined) {
        const left = p.messageExpiry - Date.now()
        if (left <= 0) { this.target.dropped(p, 'expired', 'its message expiry interval passed while it waited for the client\'s Receive Maximum'); continue }
        expiry = Math.ceil(left / 1000)
      }
      this.sendQoS(p, expiry)
    }
  }

  private sendQoS(p: WirePublish, expiry: number | undefined): boolean {
    if (p.messageId !== undefined) this.inflight.add(p.messageId)
    return this.write(p, expiry)
  }

  /** Onto the wire, with a topic alias where one saves bytes and the remaining expiry of a message that waited. */
  private write(p: WirePublish, expiry: number | undefined): boolean {
    const alias = this.aliases === null ? 0 : this.aliases.use(p.topic)
    if (alias === 0 && expiry === undefined) return this.target.send(p)
    const properties: Record<string, unknown> = { ...p.properties }
    if (alias !== 0) properties.topicAlias = Math.abs(alias)
    if (expiry !== undefined) properties.messageExpiryInterval = expiry
    return this.target.send({
      cmd: 'publish', topic: alias > 0 ? '' : p.topic, payload: p.payload, qos: p.qos, retain: p.retain, dup: p.dup,
      ...(p.messageId !== undefined ? { messageId: p.messageId } : {}), properties,
    })
  }
}
