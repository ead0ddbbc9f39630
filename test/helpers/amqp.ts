// An independent AMQP 1.0 consumer (and raw sender) for the tests, on rhea directly: not the gateway's code.
import rhea, { type Connection, type Message, type Receiver, type Sender, type Delivery } from 'rhea'
import type { Received } from './load.ts'
import { pause, scaled } from './net.ts'

export interface ConsumedMessage {
  message: Message
  body: Record<string, unknown>
  at: number
}

export interface AmqpConsumer {
  got: Received[]
  messages: ConsumedMessage[]
  /** Off: only the compact `got` records are kept (a bench consuming a million messages needs no full copies). */
  keepMessages: boolean
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

export interface AmqpTarget { host?: string; username?: string; password?: string; hostname?: string }

export async function connectAmqp(port: number, opts: AmqpTarget = {}): Promise<Connection> {
  const c = rhea.create_container({ id: `test-${Math.random().toString(36).slice(2)}` })
  c.on('error', () => undefined)
  const conn = c.connect({ host: opts.host ?? '127.0.0.1', port, reconnect: false, username: opts.username ?? 'guest', password: opts.password ?? 'guest', hostname: opts.hostname ?? 'vhost:/' })
  conn.on('disconnected', () => undefined)
  conn.on('connection_error', () => undefined)
  conn.on('session_error', () => undefined)
  conn.on('receiver_error', () => undefined)
  conn.on('protocol_error', () => undefined)
  // A booting RabbitMQ may accept the socket and then close the connection (vhost not ready): refused, not waited on.
  await new Promise<void>((resolve, reject) => {
    conn.once('connection_open', () => resolve())
    conn.once('disconnected', (ctx) => reject(new Error(`test consumer could not connect: ${String(ctx.error)}`)))
    conn.once('connection_close', (ctx) => reject(new Error(`test consumer connection closed: ${String(ctx.connection.error ?? 'by the broker')}`)))
  })
  return conn
}

/**
 * Consumes `address` (declared as a durable queue, like the gateway's sender does), accepting each message after
 * recording it. With `reconnect`, a new connection and receiver are made whenever the broker goes away (outage tests).
 */
export async function amqpConsumer(port: number, address: string, opts: { reconnect?: boolean; target?: AmqpTarget } = {}): Promise<AmqpConsumer> {
  const got: Received[] = []
  const messages: ConsumedMessage[] = []
  let keepMessages = true
  let closed = false
  const attach = async (): Promise<{ conn: Connection; receiver: Receiver }> => {
    const conn = await connectAmqp(port, opts.target)
    const receiver = conn.open_receiver({ source: { address, durable: 1 }, credit_window: 500, autoaccept: true })
    receiver.on('message', (ctx) => {
      const m = ctx.message!
      const body = bodyJson(m)
      if (keepMessages) messages.push({ message: m, body, at: Date.now() })
      got.push({ id: String(m.message_id), device: String(body.device), seq: Number(body.seq), deviceSeq: Number(body.deviceSeq) })
    })
    // the receiver may be refused, or its connection lost, while the broker is still starting: then this attach failed
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('test consumer: no receiver_open')), scaled(10_000))
      const fail = (): void => { clearTimeout(t); try { conn.close() } catch { /* gone */ } reject(new Error('test consumer: receiver refused or connection lost')) }
      receiver.once('receiver_open', () => { clearTimeout(t); conn.removeListener('disconnected', fail); conn.removeListener('connection_close', fail); resolve() })
      receiver.once('receiver_close', fail)
      conn.once('disconnected', fail)
      conn.once('connection_close', fail)
    })
    if (opts.reconnect) {
      // A broker shutdown ends the session and closes the connection cleanly (no 'disconnected'): any of them counts.
      let gone = false
      const lost = (): void => { if (gone || closed) return; gone = true; try { conn.close() } catch { /* gone */ } void retry() }
      conn.on('disconnected', lost)
      conn.on('connection_close', lost)
      conn.on('session_close', lost)
    }
    return { conn, receiver }
  }
  const retry = async (): Promise<void> => {
    while (!closed) {
      await pause(200)
      try { const a = await attach(); c.conn = a.conn; c.receiver = a.receiver; return } catch { /* broker still away */ }
    }
  }
  const first = await attach()
  const c: AmqpConsumer = {
    got, messages, conn: first.conn, receiver: first.receiver,
    get keepMessages() { return keepMessages },
    set keepMessages(v: boolean) { keepMessages = v },
    async close() {
      closed = true
      const conn = c.conn
      if (!conn.is_open()) return
      await new Promise<void>((resolve) => { const t = setTimeout(resolve, 1000); conn.once('connection_close', () => { clearTimeout(t); resolve() }); conn.close() })
    },
  }
  return c
}

/** Opens a sender; `send` resolves with the broker's outcome type (accepted / rejected / released / modified). */
export async function amqpSender(conn: Connection, address: string): Promise<{ sender: Sender; send(m: Message): Promise<{ outcome: string; delivery: Delivery }> }> {
  const sender = conn.open_sender({ target: { address, durable: 1 } })
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

export interface FakeBroker { port: number; received: Message[]; close(): Promise<void> }

/**
 * A minimal AMQP 1.0 peer on rhea that settles each incoming message as `decide` says: for the outcomes RabbitMQ 3.10
 * never sends to publishers (it has no rejected outcome for publishes), as Artemis, Qpid or Service Bus do.
 */
export async function fakeBroker(port: number, decide: (m: Message) => { outcome: 'accept' } | { outcome: 'reject'; condition: string; description: string } | { outcome: 'release' } | { outcome: 'modify' }): Promise<FakeBroker> {
  const c = rhea.create_container({ id: 'fake-broker' })
  c.on('error', () => undefined)
  const received: Message[] = []
  c.on('message', (ctx) => {
    const m = ctx.message!
    received.push(m)
    const d = decide(m)
    if (d.outcome === 'accept') ctx.delivery!.accept()
    else if (d.outcome === 'reject') ctx.delivery!.reject({ condition: d.condition, description: d.description })
    else if (d.outcome === 'release') ctx.delivery!.release()
    else ctx.delivery!.modified({ delivery_failed: true })
    // rhea 3.0.5 merges the pending dispositions of consecutive deliveries into one range carrying the first one's
    // state when the range holds a single delivery so far (write_dispositions compares states only once first !==
    // last): an "accepted" followed by a "rejected" goes out as two accepted. Framing each disposition at once (rhea's own nextTick step, run now) avoids it.
    ;(ctx.connection as unknown as { _process(): void })._process()
  })
  c.on('disconnected', () => undefined)
  // Links the peer attaches read options from the connection (receiver_options only applies to links opened here).
  const server = c.listen({ port, host: '127.0.0.1', autoaccept: false } as never) as unknown as import('node:net').Server
  await new Promise<void>((resolve) => server.once('listening', () => resolve()))
  return { port, received, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}
