// The amqp upstream: sends readings to an AMQP 1.0 broker, each settled by the broker's disposition.
// The one product file that imports rhea.
import rhea, { type Connection, type ConnectionOptions, type Container, type Delivery, type EventContext, type Receiver, type Sender } from 'rhea'
import { readFileSync } from 'node:fs'
import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions as TlsOptions } from 'node:tls'
import type { Logger } from 'pino'
import type { ClaimedRow } from '../../gateway/outbox/types.ts'
import type { Outcome, Upstream, UpstreamStatus } from '../../gateway/upstream/types.ts'
import { LinkState } from '../../gateway/upstream/link-state.ts'
import { coalesceWrites } from '../../gateway/net/coalesce.ts'
import { saslMechanism, type AmqpUpstreamConfig } from './config.ts'
import { encodeReadingMessage } from './encode.ts'
import { addressUsesDevice, amqpToCommand, commandReply, expandAddress, readingToAmqp, statusMessage, type AmqpCommandIn, type AmqpOut } from './map.ts'
import type { Command, CommandResult } from '../../gateway/commands/router.ts'

type Settle = (rowId: number, outcome: Outcome, detail?: string) => void
interface Item { rowId: number; out: AmqpOut; settle: Settle }
/** One sender link per target address; rows wait in `queue` (already claimed, in row order) until it is sendable. */
interface Link { address: string; sender: Sender; open: boolean; queue: Item[] }

/** Attach refusals that will not change by retrying: rows for that (per-device) address are dead-lettered. */
const PERMANENT_LINK_ERRORS = new Set(['amqp:not-found', 'amqp:unauthorized-access', 'amqp:not-allowed', 'amqp:invalid-field', 'amqp:precondition-failed'])

function describe(e: unknown): string {
  if (!e) return 'unknown error'
  if (typeof e === 'object') {
    const o = e as { condition?: unknown; description?: unknown; message?: unknown; code?: unknown }
    if (o.condition !== undefined) return `${String(o.condition)}${o.description ? `: ${String(o.description)}` : ''}`
    if (o.message !== undefined) return `${o.code ? `${String(o.code)} ` : ''}${String(o.message)}`
  }
  return String(e)
}

export class AmqpUpstream implements Upstream {
  readonly name: string
  private container: Container | null = null
  private conn: Connection | null = null
  private links = new Map<string, Link>()
  /** Unsettled deliveries of the current connection. */
  private unsettled = new Map<Delivery, Item>()
  /** Rows handed to deliver() and not settled yet on this connection (queued + unsettled). */
  private inflight = 0
  private closed = false
  private connectTimer: NodeJS.Timeout | null = null
  private readonly linkState: LinkState
  private readonly perDevice: boolean
  private readonly url: string
  private commandHandler: ((cmd: Command) => Promise<CommandResult>) | null = null
  private commandReceiver: Receiver | null = null
  /** Reply senders of the current connection, by reply_to address. */
  private replySenders = new Map<string, Sender>()
  private statusSource: (() => Promise<Record<string, unknown>>) | null = null
  private statusSender: Sender | null = null
  private heartbeat: NodeJS.Timeout | null = null

  constructor(private readonly cfg: AmqpUpstreamConfig, private readonly gatewayId: string, private readonly log: Logger) {
    this.name = cfg.name
    this.perDevice = addressUsesDevice(cfg.address)
    this.url = `amqp${cfg.tls ? 's' : ''}://${cfg.host}:${cfg.port}`
    this.linkState = new LinkState(log, { url: this.url }, cfg.reconnectMinMs, cfg.reconnectMaxMs)
  }

  async start(): Promise<void> {
    this.container = rhea.create_container({ id: this.cfg.containerId ?? `edgeway-${this.gatewayId}-${this.name}` })
    // Anything rhea could not route to a handler below ends here instead of an unhandled 'error' event.
    this.container.on('error', (err: unknown) => this.log.warn({ url: this.url, err: describe(err) }, 'amqp error'))
    this.connect()
  }

  status(): UpstreamStatus { return this.linkState.status() }
  onChange(listener: () => void): void { this.linkState.onChange(listener) }
  onCommand(handler: (cmd: Command) => Promise<CommandResult>): void { this.commandHandler = handler }
  setStatusSource(source: () => Promise<Record<string, unknown>>): void { this.statusSource = source }

  credit(): number {
    if (!this.linkState.connected) return 0
    const room = this.cfg.maxInflight - this.inflight
    if (this.perDevice) return Math.max(0, room)
    // One link: also bounded by the credit the broker granted, so rows are not claimed only to wait here.
    const link = this.links.get(this.cfg.address)
    if (!link?.open) return 0
    const linkCredit = (link.sender as Sender & { credit?: number }).credit ?? 0
    return Math.max(0, Math.min(room, linkCredit - link.queue.length))
  }

  deliver(rows: ClaimedRow[], settle: Settle): void {
    if (!this.conn || !this.linkState.connected) return // unsettled: released by the forwarder on the state change
    const touched = new Set<Link>()
    for (const row of rows) {
      const out = readingToAmqp(row, this.gatewayId, this.cfg.address)
      const link = this.link(out.address)
      link.queue.push({ rowId: row.rowId, out, settle })
      this.inflight++
      touched.add(link)
    }
    for (const l of touched) this.flush(l)
  }

  async close(): Promise<void> {
    this.closed = true
    this.linkState.cancelRetry()
    const conn = this.conn
    if (conn) {
      const closed = new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 1000)
        conn.once('connection_close', () => { clearTimeout(t); resolve() })
        conn.once('disconnected', () => { clearTimeout(t); resolve() })
      })
      try { conn.close() } catch { /* already gone */ }
      await closed
      this.drop(conn)
    }
    this.linkState.down(() => undefined, true)
  }

  private connect(): void {
    if (this.closed || !this.container) return
    const cfg = this.cfg
    const mech = saslMechanism(cfg)
    const mechanisms = rhea.sasl.client_mechanisms() as unknown as { enable_plain(u: string, p: string): void; enable_anonymous(u?: string): void; enable_external(): void }
    if (mech === 'PLAIN') mechanisms.enable_plain(cfg.username ?? '', cfg.password ?? '')
    else if (mech === 'ANONYMOUS') mechanisms.enable_anonymous(cfg.username ?? 'anonymous')
    else mechanisms.enable_external()
    const tls = cfg.tls
    const base = {
      host: cfg.host,
      port: cfg.port,
      // One connection per attempt and no rhea reconnect: rhea would keep unsettled deliveries half-owned across
      // links; here the outbox owns them and the forwarder resends after a new link is up.
      reconnect: false,
      container_id: cfg.containerId ?? `edgeway-${this.gatewayId}-${this.name}`,
      hostname: cfg.hostname ?? (cfg.vhost !== undefined ? `vhost:${cfg.vhost}` : cfg.host),
      idle_time_out: 30000,
      sasl_mechanisms: mechanisms,
      // rhea writes each frame with its own socket.write: the socket is made here, to coalesce them per tick.
      connect: (port: number, host: string, options: TlsOptions, onConnect: () => void): Socket => {
        const socket = tls ? tlsConnect({ ...options, port, host }, onConnect) : netConnect({ port, host }, onConnect)
        coalesceWrites(socket)
        return socket
      },
    }
    // SNI takes host names only (RFC 6066); an IP host is still verified against the certificate's IP addresses.
    const servername = tls?.servername ?? (isIP(cfg.host) ? undefined : cfg.host)
    const opts = (tls
      ? {
          ...base, transport: 'tls',
          ...(tls.ca ? { ca: readFileSync(tls.ca) } : {}),
          ...(tls.cert ? { cert: readFileSync(tls.cert) } : {}),
          ...(tls.key ? { key: readFileSync(tls.key) } : {}),
          ...(servername !== undefined ? { servername } : {}),
          rejectUnauthorized: tls.rejectUnauthorized,
          enable_sasl_external: mech === 'EXTERNAL',
        }
      : { ...base, transport: 'tcp' }) as unknown as ConnectionOptions

    let conn: Connection
    try {
      conn = this.container.connect(opts)
    } catch (err) {
      // e.g. an unreadable TLS file: same path as a failed attempt, so it is logged and retried, never fatal.
      this.linkState.noteError(describe(err))
      this.linkState.down(() => this.connect(), this.closed)
      return
    }
    this.conn = conn
    this.inflight = 0
    const mine = (): boolean => this.conn === conn
    this.connectTimer = setTimeout(() => {
      if (!mine() || this.linkState.connected) return
      this.linkState.noteError(`no AMQP open within ${cfg.connectTimeoutMs} ms`)
      this.down(conn)
    }, cfg.connectTimeoutMs)

    conn.on('connection_open', () => {
      if (!mine()) return
      if (this.perDevice) this.up()
      else this.link(cfg.address)
      if (cfg.commandAddress && this.commandHandler) {
        // Manual accept: a command is accepted once parsed; failures travel as error replies, not dispositions.
        this.commandReceiver = conn.open_receiver({
          source: cfg.durableTarget ? { address: expandAddress(cfg.commandAddress, this.gatewayId), durable: 1 } : { address: expandAddress(cfg.commandAddress, this.gatewayId) },
          autoaccept: false,
          credit_window: 50,
        })
      }
    })
    conn.on('message', (ctx: EventContext) => {
      if (!mine() || !ctx.receiver || ctx.receiver !== this.commandReceiver || !ctx.message) return
      ctx.delivery?.accept()
      this.onCommandMessage(conn, ctx.message)
    })
    conn.on('receiver_error', (ctx: EventContext) => {
      if (mine()) this.log.error({ address: cfg.commandAddress, err: describe(ctx.receiver?.error) }, 'broker refused the command link: no commands until the next connection')
    })
    conn.on('sender_open', (ctx: EventContext) => {
      if (!mine() || !ctx.sender) return
      const link = this.linkOf(ctx.sender)
      if (!link) return
      link.open = true
      if (!this.perDevice && link.address === cfg.address && !this.linkState.connected) this.up()
      this.flush(link)
    })
    conn.on('sendable', (ctx: EventContext) => {
      if (!mine() || !ctx.sender) return
      const link = this.linkOf(ctx.sender)
      if (link) this.flush(link)
      this.linkState.emit()
    })
    conn.on('accepted', (ctx: EventContext) => { if (mine()) this.outcome(ctx.delivery, 'accepted') })
    // rhea reports `modified` as `released` too (treat_modified_as_released defaults to true).
    conn.on('released', (ctx: EventContext) => { if (mine()) this.outcome(ctx.delivery, 'released') })
    conn.on('rejected', (ctx: EventContext) => {
      if (!mine()) return
      const state = ctx.delivery?.remote_state as { error?: unknown } | undefined
      this.outcome(ctx.delivery, 'rejected', `rejected by the broker: ${state?.error ? describe(state.error) : 'no reason given'}`)
    })
    // Settled without one of the outcomes above (or with an unknown one): not known to be there, so try again.
    conn.on('settled', (ctx: EventContext) => { if (mine()) this.outcome(ctx.delivery, 'released') })
    conn.on('sender_error', (ctx: EventContext) => { if (mine() && ctx.sender) this.linkFailed(conn, ctx.sender) })
    conn.on('sender_close', (ctx: EventContext) => { if (mine() && ctx.sender) this.linkFailed(conn, ctx.sender) })
    conn.on('connection_error', (ctx: EventContext) => {
      if (!mine()) return
      this.linkState.noteError(describe((ctx as EventContext & { error?: unknown }).error ?? ctx.connection.error))
    })
    conn.on('connection_close', () => { if (mine()) this.down(conn) })
    conn.on('disconnected', (ctx: EventContext) => {
      if (!mine()) return
      if (ctx.error) this.linkState.noteError(describe(ctx.error))
      this.down(conn)
    })
    // Unhandled session/receiver errors would otherwise propagate to the container: the connection handlers decide.
    // RabbitMQ 3.10 reports a refused address or an oversized message by ending the whole session: that is a link
    // failure here (nothing is settled by it; backoff and resend).
    conn.on('session_error', (ctx: EventContext) => { if (mine()) this.linkState.noteError(`session ended by the broker: ${describe(ctx.session?.error)}`) })
    conn.on('session_close', () => { if (mine()) this.down(conn) })
    conn.on('error', (err: unknown) => { if (mine()) this.linkState.noteError(describe(err)) })
    // Handled here so rhea does not print it to stderr; e.g. RabbitMQ sends frames after its close while shutting down.
    conn.on('protocol_error', (err: unknown) => {
      if (mine()) this.linkState.noteError(`protocol error: ${describe(err)}`)
      else this.log.debug({ err: describe(err) }, 'amqp protocol error on a closed connection')
    })
  }

  private onCommandMessage(conn: Connection, message: NonNullable<EventContext['message']>): void {
    const raw = message.body as unknown
    // A data section arrives as a section object; anything else is an AMQP value already.
    const body = raw && typeof raw === 'object' && (raw as { typecode?: unknown }).typecode === 0x75 ? (raw as { content: Buffer }).content : raw
    const parsed = amqpToCommand({ ...(message as unknown as AmqpCommandIn), body }, Date.now())
    if (!parsed.ok) {
      this.log.warn({ id: parsed.id, err: parsed.error }, 'bad command message')
      this.reply(conn, parsed.replyTo, { id: parsed.id, device: parsed.device, name: parsed.name, ok: false, code: 'bad_request', error: parsed.error })
      return
    }
    const cmd = parsed.command
    this.log.info({ id: cmd.id, device: cmd.device, command: cmd.name }, 'command received')
    this.commandHandler!(cmd).then((r) => {
      if (!r.ok) this.log.warn({ id: r.id, device: r.device, command: r.name, code: r.code, err: r.error }, 'command failed')
      this.reply(conn, parsed.replyTo, r)
    }, (err: unknown) => {
      this.reply(conn, parsed.replyTo, { id: cmd.id, device: cmd.device, name: cmd.name, ok: false, code: 'send_failed', error: describe(err) })
    })
  }

  /** Sends a command result to `replyTo` (on this connection only: a reply whose link is gone is logged and dropped). */
  private reply(conn: Connection, replyTo: string | null, r: CommandResult): void {
    if (!replyTo) { this.log.info({ id: r.id, ok: r.ok }, 'command had no reply_to: result not sent'); return }
    if (this.conn !== conn || !conn.is_open()) { this.log.warn({ id: r.id, replyTo }, 'link went down before the command result could be sent'); return }
    let sender = this.replySenders.get(replyTo)
    if (!sender) {
      sender = conn.open_sender({ target: this.cfg.durableTarget ? { address: replyTo, durable: 1 } : { address: replyTo } })
      this.replySenders.set(replyTo, sender)
    }
    const out = commandReply(r, replyTo, this.gatewayId)
    // rhea queues it until the link has credit.
    sender.send({ ...out, body: rhea.message.data_section(out.body) })
  }

  private link(address: string): Link {
    let l = this.links.get(address)
    if (!l) {
      const conn = this.conn!
      const atMostOnce = this.cfg.delivery === 'at-most-once'
      const sender = conn.open_sender({
        target: this.cfg.durableTarget ? { address, durable: 1 } : { address },
        // Pre-settled for at-most-once; otherwise unsettled and settled by the broker's outcome.
        snd_settle_mode: atMostOnce ? 1 : 0,
        autosettle: true,
      })
      l = { address, sender, open: false, queue: [] }
      this.links.set(address, l)
    }
    return l
  }

  private linkOf(sender: Sender): Link | undefined {
    for (const l of this.links.values()) if (l.sender === sender) return l
    return undefined
  }

  private flush(link: Link): void {
    const atMostOnce = this.cfg.delivery === 'at-most-once'
    const limit = this.maxMessageBytes(link)
    while (link.open && link.queue.length > 0 && link.sender.sendable()) {
      const item = link.queue.shift()!
      const bytes = encodeReadingMessage(item.out)
      if (limit !== undefined && bytes.length > limit) {
        // A receiver must not be sent more than its max-message-size: this reading can never go out as it is.
        this.inflight--
        item.settle(item.rowId, 'rejected', `message of ${bytes.length} bytes exceeds max-message-size ${limit}`)
        continue
      }
      // Format 0: a standard AMQP message, already encoded (rhea frames and transfers it as it is).
      const d = link.sender.send(bytes, undefined, 0)
      if (atMostOnce) {
        this.inflight--
        item.settle(item.rowId, 'accepted')
      } else {
        this.unsettled.set(d, item)
      }
    }
  }

  /** The smaller of the configured limit and the one the broker announced on attach (0 or absent = no limit). */
  private maxMessageBytes(link: Link): number | undefined {
    const remote = Number((link.sender as Sender & { remote?: { attach?: { max_message_size?: unknown } } }).remote?.attach?.max_message_size ?? 0)
    const limits = [this.cfg.maxMessageBytes, remote > 0 ? remote : undefined].filter((x): x is number => x !== undefined)
    return limits.length ? Math.min(...limits) : undefined
  }

  private outcome(d: Delivery | undefined, outcome: Outcome, detail?: string): void {
    if (!d) return
    const item = this.unsettled.get(d)
    if (!item) return
    this.unsettled.delete(d)
    this.inflight--
    if (outcome === 'released') this.log.debug({ rowId: item.rowId }, 'broker released a reading: it is retried')
    item.settle(item.rowId, outcome, detail)
    this.linkState.emit()
  }

  /** The broker refused or closed a sender link. */
  private linkFailed(conn: Connection, sender: Sender): void {
    const link = this.linkOf(sender)
    if (!link) return
    const reason = describe(sender.error ?? 'sender link closed by the broker')
    const permanent = PERMANENT_LINK_ERRORS.has(String((sender.error as { condition?: unknown } | undefined)?.condition))
    if (this.perDevice && permanent) {
      // One device's address is refused for good: its rows are dead-lettered, the other devices keep flowing.
      this.links.delete(link.address)
      this.log.error({ address: link.address, err: reason }, 'broker refused the target address: its readings go to the dead-letter table')
      const failed = [...link.queue]
      for (const [d, item] of this.unsettled) if (d.link === sender) { failed.push(item); this.unsettled.delete(d) }
      link.queue = []
      for (const item of failed) { this.inflight--; item.settle(item.rowId, 'rejected', `target address ${link.address} refused: ${reason}`) }
      this.linkState.emit()
      return
    }
    // The one target refused, or a transient failure: drop the connection; nothing is lost, the backoff retries.
    this.linkState.noteError(`sender link to ${link.address}: ${reason}`)
    this.down(conn)
  }

  /** One status message now and every heartbeatSeconds while this connection lasts (best effort, not from the outbox). */
  private startHeartbeat(conn: Connection): void {
    const cfg = this.cfg
    if (!cfg.statusAddress || !this.statusSource) return
    const address = expandAddress(cfg.statusAddress, this.gatewayId)
    this.statusSender = conn.open_sender({ target: cfg.durableTarget ? { address, durable: 1 } : { address } })
    const beat = (): void => {
      if (this.conn !== conn || !this.statusSender) return
      const sender = this.statusSender
      this.statusSource!().then((snap) => {
        if (this.conn !== conn) return
        const m = statusMessage(snap, this.gatewayId, address, cfg.heartbeatSeconds, Date.now())
        sender.send({ ...m, body: rhea.message.data_section(m.body) })
      }, (err: unknown) => this.log.warn({ err: describe(err) }, 'status snapshot failed'))
    }
    beat()
    this.heartbeat = setInterval(beat, cfg.heartbeatSeconds * 1000)
  }

  private up(): void {
    if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null }
    if (this.conn) this.startHeartbeat(this.conn)
    this.log.info({ url: this.url, address: this.cfg.address, delivery: this.cfg.delivery }, 'upstream connected')
    this.linkState.up()
  }

  /** Forget everything of `conn` (its unsettled rows are released by the forwarder on the state change). */
  private drop(conn: Connection): void {
    if (this.conn === conn) this.conn = null
    if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null }
    this.links.clear()
    this.unsettled.clear()
    this.replySenders.clear()
    this.commandReceiver = null
    this.statusSender = null
    if (this.heartbeat) { clearInterval(this.heartbeat); this.heartbeat = null }
    this.inflight = 0
    const socket = (conn as unknown as { socket?: Socket }).socket
    try { conn.close() } catch { /* already gone */ }
    // A half-dead peer may never answer the close: do not keep its socket around.
    if (socket) setTimeout(() => socket.destroy(), 1000).unref()
  }

  /** The link `conn` is gone: release it and schedule the next attempt (once per connection). */
  private down(conn: Connection): void {
    if (this.conn !== conn) return
    this.drop(conn)
    this.linkState.down(() => this.connect(), this.closed)
  }

  /** For tests and logs: the address a device's readings go to. */
  addressFor(device: string): string { return expandAddress(this.cfg.address, this.gatewayId, device) }
}
