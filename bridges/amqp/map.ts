// Pure mapping of a stored reading to the AMQP 1.0 message the amqp upstream sends (no rhea here: plain data).
import { readingEnvelope, type Reading } from '../../gateway/readings.ts'
import { isReservedPropertyName, parseUserProperties } from '../../gateway/user-properties.ts'
import type { Command, CommandResult } from '../../gateway/commands/router.ts'

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
  /** Header priority, set for the outbox priority lane only (AMQP's default is 4). */
  priority?: number
  /** The gateway's own properties first; then the reading's user properties (MQTT 5 metadata), as strings. */
  application_properties: ReadingProperties & Record<string, string | number>
  /** The reading had user properties (the encoder then writes the whole map in its key order, as rhea does). */
  userProperties?: true
  /** UTF-8 JSON, sent as one data section. */
  body: Buffer
}

/** What the gateway itself says of each reading: a device's user property never replaces one of these. */
export interface ReadingProperties { gateway: string; device: string; seq: number; link: string; deviceSeq?: number }

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
/** The AMQP priority of the outbox's priority lane (0..9; brokers with priority queues deliver it first). */
export const PRIORITY_LANE = 9

export function readingToAmqp(row: Reading & { priority?: boolean }, gateway: string, addressTemplate: string): AmqpOut {
  const address = expandAddress(addressTemplate, gateway, row.device)
  const props: AmqpOut['application_properties'] = { gateway, device: row.device, seq: row.seq, link: row.link }
  if (row.deviceSeq !== null) props.deviceSeq = row.deviceSeq
  let withUser = false
  if (row.userProperties !== undefined) {
    // Names were checked at intake; this holds for rows stored under other rules too: the gateway's keys win.
    for (const [k, v] of Object.entries(parseUserProperties(row.userProperties))) {
      if (isReservedPropertyName(k) || Object.hasOwn(props, k)) continue
      props[k] = v
      withUser = true
    }
  }
  return {
    address,
    message_id: row.msgId,
    to: address,
    subject: row.device,
    creation_time: new Date(row.receivedAt),
    content_type: 'application/json',
    durable: true,
    application_properties: props,
    body: Buffer.from(readingEnvelope(row), 'utf8'),
    ...(row.priority ? { priority: PRIORITY_LANE } : {}),
    ...(withUser ? { userProperties: true as const } : {}),
  }
}

/** The fields of an incoming command message this bridge reads (rhea's Message, narrowed). */
export interface AmqpCommandIn {
  message_id?: unknown
  subject?: unknown
  reply_to?: unknown
  absolute_expiry_time?: unknown
  creation_time?: unknown
  ttl?: unknown
  application_properties?: Record<string, unknown>
  /** Already decoded by upstream.ts: a Buffer (data section), string, or any AMQP value. */
  body?: unknown
}

export type ParsedCommand =
  | { ok: true; command: Command; replyTo: string | null }
  | { ok: false; id: string; device: string; name: string; replyTo: string | null; error: string }

/**
 * A command message: subject `<device>/<command>` (or application properties `device` and `command`), body = the
 * arguments (JSON in a data section, or an AMQP value), `message_id` correlates the reply, optional `reply_to`, TTL
 * from `absolute_expiry_time` or the header `ttl` (ms, counted from `creation_time` or from receipt).
 */
export function amqpToCommand(m: AmqpCommandIn, receivedAt: number): ParsedCommand {
  const props = m.application_properties ?? {}
  const id = m.message_id === undefined || m.message_id === null ? '' : String(m.message_id)
  const replyTo = typeof m.reply_to === 'string' && m.reply_to ? m.reply_to : null
  const subject = typeof m.subject === 'string' ? m.subject : ''
  const slash = subject.indexOf('/')
  const device = typeof props.device === 'string' ? props.device : slash > 0 ? subject.slice(0, slash) : ''
  const name = typeof props.command === 'string' ? props.command : slash > 0 ? subject.slice(slash + 1) : subject
  const bad = (error: string): ParsedCommand => ({ ok: false, id, device, name, replyTo, error })
  if (!id) return bad('command without message_id')
  if (!device || !name) return bad('command must name the device and command: subject "<device>/<command>" or application properties device/command')
  let args: unknown = null
  const b = m.body
  try {
    if (Buffer.isBuffer(b)) args = b.length ? JSON.parse(b.toString('utf8')) : null
    else if (typeof b === 'string') args = b.trim().startsWith('{') || b.trim().startsWith('[') ? JSON.parse(b) : b
    else if (b !== undefined) args = b
  } catch (e) { return bad(`command body is not valid JSON: ${(e as Error).message}`) }
  let expiresAt: number | undefined
  if (m.absolute_expiry_time instanceof Date) expiresAt = m.absolute_expiry_time.getTime()
  else if (typeof m.ttl === 'number' && m.ttl > 0) expiresAt = (m.creation_time instanceof Date ? m.creation_time.getTime() : receivedAt) + m.ttl
  return { ok: true, replyTo, command: { id, device, name, args, ...(expiresAt !== undefined ? { expiresAt } : {}) } }
}

export interface AmqpReplyOut {
  to: string
  correlation_id: string
  subject: string
  content_type: 'application/json'
  application_properties: { gateway: string; device: string; command: string; ok: boolean; code?: string }
  body: Buffer
}

/** The reply to a command: `{ok: true, result}` or `{ok: false, code, error}` as JSON, correlated by message id. */
export function commandReply(r: CommandResult, replyTo: string, gateway: string): AmqpReplyOut {
  const body = r.ok ? { ok: true, result: r.result } : { ok: false, code: r.code, error: r.error }
  return {
    to: replyTo,
    correlation_id: r.id,
    subject: `${r.device}/${r.name}`,
    content_type: 'application/json',
    application_properties: { gateway, device: r.device, command: r.name, ok: r.ok, ...(r.ok ? {} : { code: r.code }) },
    body: Buffer.from(JSON.stringify(body), 'utf8'),
  }
}

// The status address's messages (birth, heartbeat, presence, alert, death) are built in lifecycle.ts.
