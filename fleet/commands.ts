// Commands from the fleet page to a device on a gateway: the AMQP message for the gateway's command address (the
// shape bridges/amqp/map.ts amqpToCommand reads), and the table of commands waiting for their reply, matched by
// correlation id, each ended exactly once by its reply, a send failure or its timeout. Pure apart from the timers.
import { randomBytes } from 'node:crypto'
import { GATEWAY_ID_RE } from './message.ts'

/** What fleet/amqp.ts sends (rhea fields; the body goes out as one data section). */
export interface CommandOut {
  message_id: string
  subject: string
  reply_to: string
  creation_time: Date
  /** The gateway drops a command older than this (ms) instead of running it late. */
  ttl: number
  content_type: 'application/json'
  application_properties: { device: string; command: string }
  body: Buffer
}

export interface RawReply { correlationId: string | null; applicationProperties: Record<string, unknown> | undefined; body: unknown }

export type FleetCommandResult =
  | { ok: true; result: unknown }
  | { ok: false; code: string; error: string }

export interface FleetCommandRequest { gateway: string; device: string; name: string; args: unknown }

const DEVICE_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/
const MAX_ARGS = 16 * 1024

/** Checks a request from the page; null when it may be sent. */
export function requestProblem(r: { gateway?: unknown; device?: unknown; name?: unknown; args?: unknown }): string | null {
  if (typeof r.gateway !== 'string' || !GATEWAY_ID_RE.test(r.gateway)) return 'a command needs a gateway id'
  if (typeof r.device !== 'string' || !DEVICE_RE.test(r.device)) return 'a command needs a device id (letters, digits, "_", ".", ":" and "-")'
  if (typeof r.name !== 'string' || !NAME_RE.test(r.name)) return 'a command needs a name (letters, digits, "_", "." and "-")'
  if (JSON.stringify(r.args ?? null).length > MAX_ARGS) return `the arguments are larger than ${MAX_ARGS} bytes`
  return null
}

export function commandMessage(id: string, r: FleetCommandRequest, replyTo: string, ttlMs: number, now: number): CommandOut {
  return {
    message_id: id,
    subject: `${r.device}/${r.name}`,
    reply_to: replyTo,
    creation_time: new Date(now),
    ttl: ttlMs,
    content_type: 'application/json',
    application_properties: { device: r.device, command: r.name },
    body: Buffer.from(JSON.stringify(r.args ?? null), 'utf8'),
  }
}

function replyBody(b: unknown): Record<string, unknown> | null {
  let text: string | null = null
  if (Buffer.isBuffer(b)) text = b.toString('utf8')
  else if (typeof b === 'string') text = b
  else if (b && typeof b === 'object' && 'content' in b && Buffer.isBuffer((b as { content: unknown }).content)) text = (b as { content: Buffer }).content.toString('utf8')
  if (text === null) return null
  try { const v = JSON.parse(text) as unknown; return v && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : null } catch { return null }
}

interface Pending { req: FleetCommandRequest; timer: NodeJS.Timeout; resolve(r: FleetCommandResult): void }

export class CommandTracker {
  private readonly pending = new Map<string, Pending>()
  readonly counters = { sent: 0, replied: 0, timedOut: 0, unmatched: 0, foreign: 0 }

  constructor(private readonly timeoutMs: number, private readonly maxPending = 1000) {}

  get size(): number { return this.pending.size }

  /** A new correlation id and the promise of its result (a reply, or a timeout after timeoutMs). */
  begin(req: FleetCommandRequest): { id: string; result: Promise<FleetCommandResult> } | { id: null; error: string } {
    if (this.pending.size >= this.maxPending) return { id: null, error: `${this.maxPending} commands are already waiting for replies` }
    const id = `fleet-${randomBytes(8).toString('hex')}`
    const result = new Promise<FleetCommandResult>((resolve) => {
      const timer = setTimeout(() => {
        if (!this.pending.delete(id)) return
        this.counters.timedOut++
        resolve({ ok: false, code: 'timeout', error: `no reply from gateway "${req.gateway}" within ${Math.round(this.timeoutMs / 100) / 10} s` })
      }, this.timeoutMs)
      this.pending.set(id, { req, timer, resolve })
    })
    this.counters.sent++
    return { id, result }
  }

  /** The send failed: the command ends now with that reason. */
  fail(id: string, code: string, error: string): void {
    const p = this.pending.get(id)
    if (!p) return
    this.pending.delete(id)
    clearTimeout(p.timer)
    p.resolve({ ok: false, code, error })
  }

  /** A message on the reply queue: ends its command when the correlation id and the answering gateway match. */
  reply(r: RawReply): 'matched' | 'unmatched' | 'foreign' {
    const p = r.correlationId === null ? undefined : this.pending.get(r.correlationId)
    if (!p) { this.counters.unmatched++; return 'unmatched' }
    // Only the gateway the command went to may answer it.
    if (r.applicationProperties?.gateway !== p.req.gateway) { this.counters.foreign++; return 'foreign' }
    this.pending.delete(r.correlationId!)
    clearTimeout(p.timer)
    this.counters.replied++
    const b = replyBody(r.body)
    if (!b) p.resolve({ ok: false, code: 'bad_reply', error: 'the reply is not a JSON object' })
    else if (b.ok === true) p.resolve({ ok: true, result: b.result ?? null })
    else p.resolve({ ok: false, code: typeof b.code === 'string' ? b.code.slice(0, 64) : 'error', error: typeof b.error === 'string' ? b.error.slice(0, 500) : 'the command failed' })
    return 'matched'
  }

  close(): void {
    for (const [id, p] of this.pending) { clearTimeout(p.timer); p.resolve({ ok: false, code: 'stopped', error: 'the fleet is stopping' }); this.pending.delete(id) }
  }
}
