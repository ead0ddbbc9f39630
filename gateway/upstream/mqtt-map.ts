// Pure mapping of a stored reading to the MQTT message the mqtt upstream publishes.
import type { ClaimedRow } from '../outbox/types.ts'
import { readingEnvelope } from '../readings.ts'

export interface MqttOut { topic: string; payload: string }

/** `{id, device, seq, deviceSeq?, ts, receivedAt, metrics}`; raw payloads as base64 in `raw`. */
export function readingToMqtt(row: ClaimedRow, topicPrefix: string): MqttOut {
  return { topic: `${topicPrefix}${row.device}/telemetry`, payload: readingEnvelope(row) }
}
