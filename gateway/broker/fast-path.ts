// The telemetry fast path. aedes runs every PUBLISH through its full pipeline (handler series, ack write with a
// deferred callback, broker.publish with a subscription match and the offline queue) and reads a connection's next
// chunk only once all of that finished for every packet of the current one. A QoS 0/1 telemetry publish that nobody
// subscribes to needs none of it: it is checked exactly as authorizePublish would, handed to the outbox, and its
// PUBACK is written after the commit (fast-acks.ts). Anything else (other topics, QoS 2, retain, an ACL refusal, a
// telemetry subscriber present, user properties, more than FAST_PENDING uncommitted publishes on this connection)
// takes aedes' path unchanged. The aedes internals it needs (the packet listener, the socket) are in aedes-adapter.ts.
import type { EventEmitter } from 'node:events'
import { DEVICE_ID_RE } from '../readings.ts'
import { classifyTopic, type ClassifiedTopic } from './policy.ts'
import type { TelemetryIntake } from './intake.ts'
import { FastAcks, ackTag } from './fast-acks.ts'
import { RC, interceptPackets, encodeAck, type FastConnection } from './aedes-adapter.ts'

/** Uncommitted fast-path publishes per connection (count and bytes) before the next ones take aedes' path. */
const FAST_PENDING = 256
const FAST_PENDING_BYTES = 1 << 20

/** What the fast path keeps on a connection's identity: a device publishes to one topic, checked once. */
export interface FastIdentity {
  revoked: boolean
  fastTopic?: string
  fastDevice?: string
}

/** A PUBLISH as aedes' parser hands it over (the fields the fast path reads). */
interface InboundPublish {
  cmd: 'publish'; topic: string; payload: Buffer | string; qos: 0 | 1 | 2; retain: boolean; messageId?: number
  properties?: { userProperties?: unknown; topicAlias?: number }
}

export interface FastPathDeps {
  identity(client: object): FastIdentity | undefined
  /** The ACL for this identity's publish on a telemetry topic, exactly as authorizePublish applies it. */
  mayPublish(id: FastIdentity, topic: string, t: ClassifiedTopic): boolean
  /** Someone could receive telemetry (a live subscriber, a stored subscription, a shared group): aedes must route it. */
  telemetryWatched(): boolean
  intake: TelemetryIntake
  /** The broker's own look at every packet the fast path does not take (flow control); true: handled, aedes never sees it. */
  other(client: object, packet: { cmd: string }): boolean
}

export class TelemetryFastPath {
  constructor(private readonly d: FastPathDeps) {}

  /** Takes over the connection's packets before aedes (at connect). Clients whose internals are missing keep aedes' path. */
  install(client: object): void {
    let conn: FastConnection | null = null
    let acks: FastAcks | null = null
    conn = interceptPackets(client, (packet) =>
      (packet.cmd === 'publish' && conn !== null && acks !== null && this.take(client, conn, acks, packet as InboundPublish)) || this.d.other(client, packet))
    if (!conn) return
    const c = conn
    acks = new FastAcks({
      get connected() { return c.connected },
      write: (b) => c.write(b),
      fail: (err) => (client as EventEmitter).emit('error', err),
      // MQTT 5: a payload that does not decode is answered with PUBACK 0x99 (3.1.1: a plain PUBACK, as before)
      refusedAck: (messageId, reason) => c.v5 ? encodeAck(1, messageId, RC.PAYLOAD_FORMAT_INVALID, c.problemInfo ? `payload refused: ${reason}` : null) : null,
    })
  }

  /** True if the publish was taken (stored, acked after the commit); false: aedes handles it. */
  private take(client: object, c: FastConnection, acks: FastAcks, packet: InboundPublish): boolean {
    if (packet.qos === 2 || packet.retain || !c.connected) return false
    const id = this.d.identity(client)
    if (!id || id.revoked || acks.pending >= FAST_PENDING || acks.pendingBytes >= FAST_PENDING_BYTES) return false
    const props = packet.properties
    // MQTT 5 user properties take aedes' path (checked and stored in authorizePublish): the one check readings pay
    if (props !== undefined && props.userProperties !== undefined) return false
    // MQTT 5 topic alias: resolved into aedes' own map (an unknown or invalid one is aedes' to refuse)
    const topic = props?.topicAlias !== undefined ? c.resolveTopicAlias(packet) : packet.topic
    if (topic === null) return false
    let device = id.fastDevice
    if (topic !== id.fastTopic || device === undefined) {
      const t = classifyTopic(topic)
      if (!t || t.kind !== 'telemetry' || !DEVICE_ID_RE.test(t.device)) return false
      if (id.revoked || !this.d.mayPublish(id, topic, t)) return false
      id.fastTopic = topic
      device = id.fastDevice = t.device
    }
    if (this.d.telemetryWatched()) return false
    c.touch()
    const payload = packet.payload as Buffer
    const tag = ackTag(packet.messageId ?? 0, packet.qos === 1, payload.length)
    acks.take(tag)
    this.d.intake.handleOwned(device, payload, acks, tag)
    return true
  }
}
