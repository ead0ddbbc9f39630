// An independent AMQP 1.0 consumer (and raw sender) for the tests, on rhea directly: not the gateway's code.
import rhea, { type Connection, type Message, type Receiver, type Sender, type Delivery } from 'rhea'
import type { Received } from './load.ts'

export interface ConsumedMessage {
  message: Message
  body: Record<string, unknown>
  at: number
}

export interface AmqpConsumer {
  got: Received[]
  messages: ConsumedMessage[]
  conn: Connection
  receiver: Receiver
  close(): Promise<void>
}

/** Decodes the body the gateway sends (one data section of JSON) or any string/Buffer body. */
export function bodyJson(m: Message): Record<string, unknown> {
  const b = m.body as unknown
  let buf: Buffer
  if (Buffer.isBuffer(b)) buf = b
  else if (b && typeof b === 'object' && 'content' in b) buf = (b as { content: Buffer }).content
  else if (typeof b === 'string') return JSON.parse(b) as Record<string, unknown>
  else throw new Error(`unexpected body ${JSON.stringify(b)}`)
  return JSON.parse(buf.toString('utf8')) as Record<string, unknown>
}

export async function connectAmqp(port: number, opts: { username?: string; password?: string } = {}): Promise<Connection> {
  const c = rhea.create_container({ id: `test-${Math.random().toString(36).slice(2)}` })
  c.on('error', () => undefined)
  const conn = c.connect({ host: '127.0.0.1', port, reconnect: false, username: opts.username ?? 'guest', password: opts.password ?? 'guest', hostname: 'vhost:/' })
  conn.on('disconnected', () => undefined)
  conn.on('connection_error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    conn.once('connection_open', () => resolve())
    conn.once('disconnected', (ctx) => reject(new Error(`test consumer could not connect: ${String(ctx.error)}`)))
  })
  return conn
}

/** Consumes `address` with manual accept after recording each message. Reconnects (for outage tests) when asked. */
export async function amqpConsumer(port: number, address: string): Promise<AmqpConsumer> {
  const got: Received[] = []
  const messages: ConsumedMessage[] = []
  const conn = await connectAmqp(port)
  const receiver = conn.open_receiver({ source: { address }, credit_window: 500, autoaccept: true })
  receiver.on('message', (ctx) => {
    const m = ctx.message!
    const body = bodyJson(m)
    messages.push({ message: m, body, at: Date.now() })
    got.push({ id: String(m.message_id), device: String(body.device), seq: Number(body.seq), deviceSeq: Number(body.deviceSeq) })
  })
  await new Promise<void>((resolve) => receiver.once('receiver_open', () => resolve()))
  return {
    got, messages, conn, receiver,
    async close() {
      if (!conn.is_open()) return
      await new Promise<void>((resolve) => { const t = setTimeout(resolve, 1000); conn.once('connection_close', () => { clearTimeout(t); resolve() }); conn.close() })
    },
  }
}

/** Opens a sender; `send` resolves with the broker's outcome type (accepted / rejected / released / modified). */
export async function amqpSender(conn: Connection, address: string): Promise<{ sender: Sender; send(m: Message): Promise<{ outcome: string; delivery: Delivery }> }> {
  const sender = conn.open_sender({ target: { address } })
  await new Promise<void>((resolve) => sender.once('sendable', () => resolve()))
  const waiting = new Map<Delivery, (o: { outcome: string; delivery: Delivery }) => void>()
  for (const outcome of ['accepted', 'rejected', 'released', 'modified']) {
    sender.on(outcome, (ctx) => { const w = waiting.get(ctx.delivery!); if (w) { waiting.delete(ctx.delivery!); w({ outcome, delivery: ctx.delivery! }) } })
  }
  return {
    sender,
    send(m) { return new Promise((resolve) => { waiting.set(sender.send(m), resolve) }) },
  }
}
