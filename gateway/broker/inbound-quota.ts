// The gateway's own Receive Maximum (MQTT 5.0 section 3.3.4): how many QoS 1/2 PUBLISHes one MQTT 5 client may have
// sent that the gateway has not answered yet with PUBACK, PUBCOMP or a PUBREC of 0x80 or more. Counted on aedes'
// path only: the telemetry fast path bounds itself (FAST_PENDING uncommitted publishes per connection) and stays
// free of this bookkeeping, so a client can go over by at most that many before it is refused.

/** Advertised in CONNACK (aedes 1.2.0's maxInflightInbound, and the gateway's bound on inbound QoS 2 awaiting PUBREL). */
export const RECEIVE_MAXIMUM = 1000

export class InboundQuota {
  private readonly open = new Set<number>()

  constructor(private readonly max = RECEIVE_MAXIMUM) {}

  get inFlight(): number { return this.open.size }

  /** A QoS 1/2 PUBLISH arrived; false: it is one more than the client may have in flight. */
  take(messageId: number): boolean {
    // a QoS 2 retransmission of a packet still in flight takes no second slot
    if (this.open.has(messageId)) return true
    if (this.open.size >= this.max) return false
    this.open.add(messageId)
    return true
  }

  /** The gateway answered a PUBLISH: a PUBACK (any code), a PUBCOMP, or a PUBREC with a code of 0x80 or more. */
  answered(cmd: 'puback' | 'pubrec' | 'pubcomp', messageId: number, reasonCode: number): void {
    if (cmd === 'pubrec' && reasonCode < 0x80) return
    this.open.delete(messageId)
  }
}
