// Pure mapping of a stored reading to the MQTT message the mqtt upstream publishes.
import type { ClaimedRow } from '../outbox/types.ts'
import { readingMetrics } from '../readings.ts'

export interface MqttOut { topic: string; payload: string }

/** `{id, device, seq, deviceSeq?, ts, receivedAt, metrics}`; raw payloads as base64 in `raw`. */
export function readingToMqtt(row: ClaimedRow, topicPrefix: string): MqttOut {
  const body: Record<string, unknown> = { id: row.msgId, device: row.device, seq: row.seq, ts: row.ts, receivedAt: row.receivedAt, link: row.link }
  if (row.deviceSeq !== null) body.deviceSeq = row.deviceSeq
  if (row.kind === 'json') body.metrics = readingMetrics(row)
  else body.raw = Buffer.from(row.payload as Uint8Array).toString('base64')
  return { topic: `${topicPrefix}${row.device}/telemetry`, payload: JSON.stringify(body) }
}
