// Pure mapping of a stored reading to the AMQP 1.0 message the amqp upstream sends (no rhea here: plain data).
import type { Reading } from '../../gateway/readings.ts'
import { readingToMqtt } from '../../gateway/upstream/mqtt-map.ts'

/** The fields of an AMQP 1.0 message this bridge sets; upstream.ts hands them to rhea as they are. */
export interface AmqpOut {
  /** Target address (the sender link it goes out on). */
  address: string
  message_id: string
  to: string
  subject: string
  creation_time: Date
  content_type: 'application/json'
  durable: true
  application_properties: { gateway: string; device: string; seq: number; link: string; deviceSeq?: number }
  /** UTF-8 JSON, sent as one data section. */
  body: Buffer
}

/** Replaces `{gateway}` and `{device}` in an address template. */
export function expandAddress(template: string, gateway: string, device = ''): string {
  return template.replaceAll('{gateway}', gateway).replaceAll('{device}', device)
}

export function addressUsesDevice(template: string): boolean {
  return template.includes('{device}')
}

/**
 * Body: the same JSON envelope the mqtt upstream publishes (`{id, device, seq, deviceSeq?, ts, receivedAt, link,
 * metrics | raw}`), so a consumer can switch upstream type without a new parser.
 */
export function readingToAmqp(row: Reading, gateway: string, addressTemplate: string): AmqpOut {
  const address = expandAddress(addressTemplate, gateway, row.device)
  const props: AmqpOut['application_properties'] = { gateway, device: row.device, seq: row.seq, link: row.link }
  if (row.deviceSeq !== null) props.deviceSeq = row.deviceSeq
  return {
    address,
    message_id: row.msgId,
    to: address,
    subject: row.device,
    creation_time: new Date(row.receivedAt),
    content_type: 'application/json',
    durable: true,
    application_properties: props,
    body: Buffer.from(readingToMqtt(row, '').payload, 'utf8'),
  }
}
