// The fleet's AMQP 1.0 side: one connection to the broker (several brokers tried in turn), a receiver on the status
// address (every gateway's lifecycle messages), a receiver on the fleet's reply queue and one sender per gateway
// command address. Through bridges/amqp/rhea.ts, the one file that imports rhea; it hands
// plain fields to the pure decoders (fleet/message.ts, fleet/commands.ts) and owns reconnects.
import { createContainer, dataSection, type Connection, type ConnectionOptions, type Container, type Message, type Sender } from '../bridges/amqp/rhea.ts'
import type { Logger } from 'pino'
import { Backoff } from '../gateway/upstream/backoff.ts'
import { brokerList, type FleetConfig } from './config.ts'
import { gatewayAddress, type RawLifecycle } from './message.ts'
import type { CommandOut, RawReply } from './commands.ts'

/** Command sender links kept attached at most (least recently used go first). */
const MAX_SENDERS = 64
const SEND_ATTACH_TIMEOUT_MS = 10_000

interface SenderLink { sender: Sender; open: boolean; waiting: { m: CommandOut; done: (err: string | null) => void }[]; unsettled: Map<unknown, (err: string | null) => void>; used: number }

// RabbitMQ 3.10 has no "rejected" for publishes: an unroutable command is accepted and lost, which the command's
// timeout then reports.
const OUTCOMES = [['accepted', null], ['rejected', 'the broker rejected the command'], ['released', 'the broker released the command'], ['modified', 'the broker did not deliver the command']] as const

export interface FleetAmqpEvents {
  status(raw: RawLifecycle): void
  reply(raw: RawReply): void
  link(up: boolean, detail: string): void
}

function describe(e: unknown): string {
  if (!e) return 'unknown error'
  if (typeof e === 'object') {
    const o = e as { condition?: unknown; description?: unknown; message?: unknown }
    if (o.condition !== undefined) return `${String(o.condition)}${o.description ? `: ${String(o.description)}` : ''}`
    if (o.message !== undefined) return String(o.message)
  }
  return String(e)
}

export class FleetAmqp {
  private container: Container | null = null
  private conn: Connection | null = null
  private up = false
  private closed = false
  private attempt = 0
  private timer: NodeJS.Timeout | null = null
  private readonly senders = new Map<string, SenderLink>()
  private readonly backoff: Backoff
  /** Each known gateway's own status address (null: the status address has no "*" for the gateway id). */
  private readonly addressOf: ((gateway: string) => string) | null
  /** Gateways consumed on their own address: the link says who routed a message, which the body cannot. */
  private readonly watched = new Set<string>()
  received = 0

  constructor(private readonly cfg: FleetConfig, private readonly log: Logger, private readonly on: FleetAmqpEvents) {
    this.backoff = new Backoff(cfg.amqp.reconnectMinMs, cfg.amqp.reconnectMaxMs, { shortOutage: {} })
    this.addressOf = gatewayAddress(cfg.statusAddress)
  }

  /** True when gateways are consumed on their own addresses (the status address is the discovery link only). */
  get perGateway(): boolean { return this.addressOf !== null }

  watching(gateway: string): boolean { return this.watched.has(gateway) }

  /** Consumes this gateway on its own address from now on (bounded by maxGateways: no link per made-up id beyond it). */
  watch(gateway: string): void {
    if (!this.addressOf || this.watched.has(gateway) || this.watched.size >= this.cfg.maxGateways) return
    this.watched.add(gateway)
    if (this.conn && this.up) this.openOwn(this.conn, gateway)
  }

  private openOwn(conn: Connection, gateway: string): void {
    const address = this.addressOf!(gateway)
    const r = conn.open_receiver({ source: { address }, credit_window: 50, autoaccept: true })
    r.on('message', (ctx) => { this.received++; this.on.status(rawLifecycle(ctx.message!, gateway)) })
    r.on('receiver_error', (ctx) => this.log.error({ address, err: describe(ctx.receiver?.error) }, 'fleet: gateway status address refused'))
  }

  get connected(): boolean { return this.up }

  start(): void {
    this.container = createContainer(this.cfg.amqp.containerId)
    this.container.on('error', () => undefined)
    this.connect()
  }

  async stop(): Promise<void> {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    const c = this.conn
    this.conn = null
    this.failSenders('fleet stopping')
    if (c && c.is_open()) await new Promise<void>((resolve) => { const t = setTimeout(resolve, 1000); c.once('connection_close', () => { clearTimeout(t); resolve() }); c.close() })
  }

  /** Sends one command message to `address`; resolves null once the broker accepted it, else the reason. */
  send(address: string, m: CommandOut): Promise<string | null> {
    const conn = this.conn
    if (!conn || !this.up) return Promise.resolve('the fleet is not connected to the broker')
    let link = this.senders.get(address)
    if (!link) {
      if (this.senders.size >= MAX_SENDERS) this.dropLeastUsed()
      // Durable terminus: RabbitMQ 3.10 refuses an attach to a durable queue (the gateway declares its command queue
      // durable) with inequivalent durability, and ends the whole connection doing so.
      const sender = conn.open_sender({ target: { address, durable: 1 }, autosettle: true })
      const l: SenderLink = { sender, open: false, waiting: [], unsettled: new Map(), used: Date.now() }
      for (const [outcome, err] of OUTCOMES) {
        sender.on(outcome, (ctx) => { const done = l.unsettled.get(ctx.delivery); if (done) { l.unsettled.delete(ctx.delivery); done(err) } })
      }
      link = l
      this.senders.set(address, l)
      const flush = (): void => { l.open = true; for (const w of l.waiting.splice(0)) this.transmit(l, w.m, w.done) }
      sender.once('sendable', flush)
      sender.on('sender_error', (ctx) => { const why = describe(ctx.sender?.error); this.log.warn({ address, err: why }, 'fleet: command link refused'); this.dropSender(address, `command link refused: ${why}`) })
      sender.on('sender_close', () => this.dropSender(address, 'command link closed'))
      setTimeout(() => { if (!l.open && this.senders.get(address) === l) this.dropSender(address, `command link not attached within ${SEND_ATTACH_TIMEOUT_MS} ms`) }, SEND_ATTACH_TIMEOUT_MS).unref()
    }
    link.used = Date.now()
    const l = link
    return new Promise((resolve) => {
      if (l.open) this.transmit(l, m, resolve)
      else l.waiting.push({ m, done: resolve })
    })
  }

  private transmit(l: SenderLink, m: CommandOut, done: (err: string | null) => void): void {
    try {
      l.unsettled.set(l.sender.send({ ...m, body: dataSection(m.body) }), done)
    } catch (err) { done(describe(err)) }
  }

  private dropLeastUsed(): void {
    let oldest: [string, SenderLink] | null = null
    for (const e of this.senders) if (!e[1].waiting.length && (!oldest || e[1].used < oldest[1].used)) oldest = e
    if (oldest) { try { oldest[1].sender.close() } catch { /* gone */ } this.senders.delete(oldest[0]) }
  }

  private dropSender(address: string, why: string): void {
    const l = this.senders.get(address)
    if (!l) return
    this.senders.delete(address)
    for (const w of l.waiting.splice(0)) w.done(why)
    for (const done of l.unsettled.values()) done(why)
    l.unsettled.clear()
    try { l.sender.close() } catch { /* gone */ }
  }

  private failSenders(why: string): void {
    for (const a of [...this.senders.keys()]) this.dropSender(a, why)
  }

  private options(): ConnectionOptions {
    const a = this.cfg.amqp
    const brokers = brokerList(a)
    const b = brokers[this.attempt++ % brokers.length]!
    return {
      host: b.host, port: b.port, reconnect: false,
      container_id: `${a.containerId}-${process.pid}`,
      hostname: a.vhost !== undefined ? `vhost:${a.vhost}` : b.host,
      idle_time_out: 30000,
      ...(a.username !== undefined ? { username: a.username, password: a.password } : {}),
      transport: 'tcp',
    } as ConnectionOptions
  }

  private connect(): void {
    if (this.closed || !this.container) return
    const opts = this.options()
    const where = `${String((opts as { host: string }).host)}:${String((opts as { port: number }).port)}`
    let conn: Connection
    try { conn = this.container.connect(opts) } catch (err) { this.lost(null, describe(err)); return }
    this.conn = conn
    const mine = (): boolean => this.conn === conn
    let statusOpen = false, repliesOpen = false
    const ready = (): void => {
      if (!statusOpen || !repliesOpen || !mine() || this.up) return
      this.up = true
      this.backoff.reset()
      for (const g of this.watched) this.openOwn(conn, g)
      this.log.info({ broker: where, statusAddress: this.cfg.statusAddress, replyAddress: this.cfg.replyAddress, gateways: this.watched.size }, 'fleet: broker connected')
      this.on.link(true, where)
    }
    conn.on('connection_open', () => {
      const status = conn.open_receiver({ source: { address: this.cfg.statusAddress }, credit_window: 500, autoaccept: true })
      status.on('receiver_open', () => { statusOpen = true; ready() })
      status.on('message', (ctx) => { this.received++; this.on.status(rawLifecycle(ctx.message!, null)) })
      status.on('receiver_error', (ctx) => this.log.error({ address: this.cfg.statusAddress, err: describe(ctx.receiver?.error) }, 'fleet: status address refused'))
      const replies = conn.open_receiver({ source: { address: this.cfg.replyAddress, durable: 1 }, credit_window: 100, autoaccept: true })
      replies.on('receiver_open', () => { repliesOpen = true; ready() })
      replies.on('message', (ctx) => this.on.reply(rawReply(ctx.message!)))
      replies.on('receiver_error', (ctx) => this.log.error({ address: this.cfg.replyAddress, err: describe(ctx.receiver?.error) }, 'fleet: reply address refused'))
    })
    const gone = (ctx: { error?: unknown; connection?: Connection }): void => { if (mine()) this.lost(conn, describe(ctx.error ?? ctx.connection?.error ?? 'connection closed')) }
    conn.on('disconnected', gone)
    conn.on('connection_close', gone)
    conn.on('connection_error', gone)
    conn.on('session_error', gone)
    conn.on('protocol_error', () => undefined)
  }

  private lost(conn: Connection | null, why: string): void {
    const wasUp = this.up
    this.up = false
    this.conn = null
    this.failSenders(`connection lost: ${why}`)
    try { conn?.close() } catch { /* gone */ }
    if (wasUp) { this.log.warn({ err: why }, 'fleet: broker connection lost'); this.on.link(false, why) }
    if (this.closed) return
    const delay = this.backoff.next()
    this.timer = setTimeout(() => this.connect(), delay)
  }
}

function rawLifecycle(m: Message, routedFor: string | null): RawLifecycle {
  return {
    subject: m.subject,
    applicationProperties: m.application_properties as Record<string, unknown> | undefined,
    body: m.body as unknown,
    routedFor,
    ttlMs: typeof m.ttl === 'number' ? m.ttl : null,
  }
}

function rawReply(m: Message): RawReply {
  return { correlationId: m.correlation_id === undefined || m.correlation_id === null ? null : String(m.correlation_id), applicationProperties: m.application_properties as Record<string, unknown> | undefined, body: m.body as unknown }
}
