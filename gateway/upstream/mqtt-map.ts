// Pure mapping for the mqtt upstream: a stored reading to the MQTT message it publishes, and the broker's answer to a
// publish back to the reading's outcome. No MQTT.js here: plain data in the shapes MQTT.js takes and gives.
import type { ClaimedRow } from '../outbox/types.ts'
import { readingEnvelope } from '../readings.ts'
import { isReservedPropertyName, parseUserProperties } from '../user-properties.ts'
import { packetBytes, varIntBytes } from '../mqtt-wire.ts'

/** The MQTT 5 publish properties this upstream sets (MQTT.js's IPublishPacket properties, narrowed). */
export interface MqttOutProperties {
  /** The gateway's own keys first (gateway, device, seq, link, deviceSeq), then the reading's user properties. */
  userProperties: Record<string, string>
  contentType: 'application/json'
  /** The payload is UTF-8 (the JSON envelope always is). */
  payloadFormatIndicator: true
}

export interface MqttOut {
  topic: string
  payload: string
  /** Set under MQTT 5 only: 3.1.1 has no properties. */
  properties?: MqttOutProperties
}

export interface MqttOutOptions {
  topicPrefix: string
  gateway: string
  protocolVersion: 4 | 5
}

/**
 * Topic `<topicPrefix><device>/telemetry`, payload `{id, device, seq, deviceSeq?, ts, receivedAt, metrics}` (raw
 * payloads as base64 in `raw`): the same envelope the amqp upstream sends. Under MQTT 5 the same per-reading
 * properties as the amqp upstream's application properties, as strings.
 */
export function readingToMqtt(row: ClaimedRow, o: MqttOutOptions): MqttOut {
  const out: MqttOut = { topic: `${o.topicPrefix}${row.device}/telemetry`, payload: readingEnvelope(row) }
  if (o.protocolVersion !== 5) return out
  const props: Record<string, string> = { gateway: o.gateway, device: row.device, seq: String(row.seq), link: row.link }
  if (row.deviceSeq !== null) props.deviceSeq = String(row.deviceSeq)
  if (row.userProperties !== undefined) {
    // Names were checked at intake; this holds for rows stored under other rules too: the gateway's keys win.
    for (const [k, v] of Object.entries(parseUserProperties(row.userProperties))) {
      if (isReservedPropertyName(k) || Object.hasOwn(props, k)) continue
      props[k] = v
    }
  }
  out.properties = { userProperties: props, contentType: 'application/json', payloadFormatIndicator: true }
  return out
}

/** What MQTT.js hands a publish callback as its second argument, narrowed: the ack on a refusal, else the publish. */
export interface MqttAckLike {
  cmd: string
  reasonCode?: number
  properties?: { reasonString?: string }
}

/** A reading's outcome from the broker's answer; `unsettled` when no answer came (the link went first). */
export type PublishOutcome =
  | { outcome: 'accepted'; reasonCode: number }
  | { outcome: 'rejected'; reasonCode: number; detail: string }
  | { outcome: 'unsettled'; error: string }

/** MQTT 5 PUBACK/PUBREC reason codes (spec 3.4.2.1, 3.5.2.1); PUBCOMP's 0x92 too. */
const REASONS: Record<number, string> = {
  0x00: 'Success',
  0x10: 'No matching subscribers',
  0x80: 'Unspecified error',
  0x83: 'Implementation specific error',
  0x87: 'Not authorized',
  0x90: 'Topic Name invalid',
  0x91: 'Packet Identifier in use',
  0x92: 'Packet Identifier not found',
  0x97: 'Quota exceeded',
  0x99: 'Payload format invalid',
}

export const hex = (code: number): string => `0x${code.toString(16).padStart(2, '0').toUpperCase()}`

/**
 * MQTT.js 5 calls a QoS 1/2 publish back with: (null, the stored PUBLISH) on a PUBACK/PUBCOMP without an error code;
 * (ErrorWithReasonCode, the PUBACK/PUBREC/PUBCOMP) when the ack's reason code is neither 0x00 nor 0x10; (Error
 * 'Connection closed', nothing) when the connection ends first. So the ack itself decides: PUBACK or PUBREC >= 0x80
 * is the broker refusing the message (final: dead-letter); below 0x80 it took it (0x10: nobody subscribes, still
 * accepted). A PUBCOMP error (0x92) comes after a PUBREC that accepted the message, so it stays accepted.
 */
export function publishOutcome(err: Error | null | undefined, packet: MqttAckLike | undefined): PublishOutcome {
  if (packet && (packet.cmd === 'puback' || packet.cmd === 'pubrec' || packet.cmd === 'pubcomp')) {
    const code = packet.reasonCode ?? 0
    if (code < 0x80 || packet.cmd === 'pubcomp') return { outcome: 'accepted', reasonCode: code }
    const why = packet.properties?.reasonString
    const detail = `${packet.cmd.toUpperCase()} ${hex(code)} ${REASONS[code] ?? 'error'}${why ? `: ${why}` : ''}`
    return { outcome: 'rejected', reasonCode: code, detail }
  }
  if (err) return { outcome: 'unsettled', error: err.message }
  return { outcome: 'accepted', reasonCode: 0 }
}

const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8')

/**
 * The size on the wire of the PUBLISH that carries `m` (fixed header included: what a Maximum Packet Size counts,
 * MQTT 5.0 3.2.2.3.6). The properties are the ones readingToMqtt sets; MQTT.js adds none (no topic alias here).
 */
export function publishPacketBytes(m: MqttOut, qos: 0 | 1 | 2): number {
  let remaining = 2 + utf8Bytes(m.topic) + (qos > 0 ? 2 : 0) + utf8Bytes(m.payload)
  if (m.properties) {
    let props = 2 /* payload format indicator */ + 3 + utf8Bytes(m.properties.contentType)
    for (const [k, v] of Object.entries(m.properties.userProperties)) props += 5 + utf8Bytes(k) + utf8Bytes(v)
    remaining += varIntBytes(props) + props
  }
  return packetBytes(remaining)
}
