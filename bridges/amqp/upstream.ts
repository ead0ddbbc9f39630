// The amqp upstream: sends readings to an AMQP 1.0 broker, each settled by the broker's disposition.
import { createContainer, dataSection, saslMechanisms, type Connection, type ConnectionOptions, type Container, type Delivery, type EventContext, type Receiver, type Sender } from './rhea.ts'
import { readFileSync } from 'node:fs'
import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions as TlsOptions } from 'node:tls'
import type { Logger } from 'pino'
import type { ClaimedRow } from '../../gateway/outbox/types.ts'
import type { Outcome, Upstream, UpstreamStatus } from '../../gateway/upstream/types.ts'
import { LinkState } from '../../gateway/upstream/link-state.ts'
import { coalesceWrites } from '../../gateway/net/coalesce.ts'
import { amqpHosts, quorumQueueName, saslMechanism, type AmqpUpstreamConfig } from './config.ts'
import { checkQuorumQueue } from './queue-check.ts'
import { encodeReadingMessage } from './encode.ts'
import { addressUsesDevice, amqpToCommand, commandReply, expandAddress, readingToAmqp, type AmqpCommandIn, type AmqpOut, type AmqpReplyOut } from './map.ts'
import { alertMessage, bareLifecycle, birthMessage, deathMessage, heartbeatMessage, presenceMessage, type GatewayLifecycle, type LifecycleContext, type LifecycleOut, type LifecycleSink, type PresenceEvent } from './lifecycle.ts'
import { ReplyChannel } from './reply-channel.ts'
import { describe } from './describe.ts'
import type { Command, CommandResult } from '../../gateway/commands/router.ts'
import type { AlertEvent } from '../../gateway/alerts/rules.ts'

type Settle = (rowId: number, outcome: Outcome, detail?: string) => void
interface Item { rowId: number; out: AmqpOut; settle: Settle }
/** One sender link per target address; rows wait in `queue` (already claimed, in row order) until it is sendable. */
interface Link { address: string; sender: Sender; open: boolean; queue: Item[] }

/** Attach refusals that will not change by retrying: rows for that (per-device) address are dead-lettered. */
const PERMANENT_LINK_ERRORS = new Set(['amqp:not-found', 'amqp:unauthorized-access', 'amqp:not-allowed', 'amqp:invalid-field', 'amqp:precondition-failed'])


/** The common upstream status plus the command-reply counters (since start; for health and metrics). */
export interface AmqpUpstreamStatus extends UpstreamStatus {
  /** Command replies the broker accepted. */
  repliesSent: number
  /** Command replies that could not be delivered: attach refused, connection lost, rejected/released, timeout. */
  repliesFailed: number
  /** The node (host:port) connected to, or being tried while down. */
  endpoint: string
}

/** `edgeway doctor`'s probe message (consumers may drop it: application property probe = true). */
export const PROBE_SUBJECT = 'edgeway-doctor-probe'
/** The device name a per-device ({device}) telemetry address is probed with. */
export const PROBE_DEVICE = 'doctor-probe'
export interface ProbeResult { endpoint: string; address: string; sent: boolean; ok: boolean; detail: string }

/** A clean shutdown waits at most this long for the broker to take the `death` message. */
const DEATH_WAIT_MS = 2000
export class AmqpUpstream implements Upstream, LifecycleSink {
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
  /** The nodes of `host`/`hosts`, in order; `hostIndex` is the one in use (moves on after each lost link or failed attempt). */
  private readonly hosts: { host: string; port: number }[]
  private hostIndex = 0
  /** The unverifiable-queue-type warning, once per process. */
  private queueWarned = false
  /** Shared with linkState's log fields: updated as the node changes. */
  private readonly logFields: { url: string }
  private commandHandler: ((cmd: Command) => Promise<CommandResult>) | null = null
  private commandReceiver: Receiver | null = null
  /** Command replies: their own connection, never this one (see ReplyChannel). */
  private readonly replies: ReplyChannel
  private statusSource: (() => Promise<Record<string, unknown>>) | null = null
  private statusSender: Sender | null = null
  private heartbeat: NodeJS.Timeout | null = null
  /** bootId, version, config digest and devices for the status address (setLifecycle; a bare one until then). */
  private lifecycle: GatewayLifecycle = bareLifecycle()
  /** Numbers the status-address messages of this process (their message_id). */
  private statusSeq = 0

  constructor(private readonly cfg: AmqpUpstreamConfig, private readonly gatewayId: string, private readonly log: Logger) {
    this.name = cfg.name
    this.perDevice = addressUsesDevice(cfg.address)
    this.hosts = amqpHosts(cfg)
    this.logFields = { url: this.urlOf(0) }
    this.linkState = new LinkState(log, this.logFields, cfg.reconnectMinMs, cfg.reconnectMaxMs)
    this.replies = new ReplyChannel(() => this.container, () => this.connectionOptions('-replies'), cfg.durableTarget, log, dataSection)
  }

  async start(): Promise<void> {
    this.container = createContainer(this.cfg.containerId ?? `edgeway-${this.gatewayId}-${this.name}`)
    // Anything rhea could not route to a handler below ends here instead of an unhandled 'error' event.
    this.container.on('error', (err: unknown) => this.log.warn({ url: this.url, err: describe(err) }, 'amqp error'))
    this.connect()
  }

  status(): AmqpUpstreamStatus {
    const h = this.hosts[this.hostIndex]!
    return { ...this.linkState.status(), repliesSent: this.replies.sent, repliesFailed: this.replies.failed, endpoint: `${h.host}:${h.port}` }
  }

  private get url(): string { return this.logFields.url }
  private urlOf(i: number): string { const h = this.hosts[i]!; return `amqp${this.cfg.tls ? 's' : ''}://${h.host}:${h.port}` }

  /** The next node: after a lost link or a failed attempt (reconnect backoff as for one node; no fail-back). */
  private nextHost(): void {
    if (this.hosts.length < 2) return
    this.hostIndex = (this.hostIndex + 1) % this.hosts.length
    this.logFields.url = this.urlOf(this.hostIndex)
  }
  onChange(listener: () => void): void { this.linkState.onChange(listener) }
  onCommand(handler: (cmd: Command) => Promise<CommandResult>): void { this.commandHandler = handler }
  setStatusSource(source: () => Promise<Record<string, unknown>>): void { this.statusSource = source }
  setLifecycle(l: GatewayLifecycle): void { this.lifecycle = l }

  /**
   * An alert raised or cleared goes out on the status address at once (best effort like the heartbeat: while the
   * link is down it is not queued, and the next heartbeat, sent on reconnect, lists the active alerts).
   */
  publishAlert(e: AlertEvent): void {
    const ctx = this.statusContext()
    if (ctx) this.sendStatus(alertMessage(ctx, e), { alert: e.alert.id })
  }

  /** A device online/offline, at once (best effort: while the link is down it is not queued; the next birth lists every device). */
  publishPresence(e: PresenceEvent): void {
    const ctx = this.statusContext()
    if (ctx) this.sendStatus(presenceMessage(ctx, e, ++this.statusSeq), { device: e.device })
  }

  /** Where this connection's status-address messages go; null when there is none (unset, or the link is down). */
  private statusContext(): LifecycleContext | null {
    const address = this.cfg.statusAddress
    if (!address || !this.statusSender || !this.conn) return null
    return { gateway: this.gatewayId, address: expandAddress(address, this.gatewayId), bootId: this.lifecycle.bootId, heartbeatSeconds: this.cfg.heartbeatSeconds }
  }

  private sendStatus(m: LifecycleOut, logFields: Record<string, unknown>): Delivery | null {
    try {
      return this.statusSender!.send({ ...m, body: dataSection(m.body) })
    } catch (err) {
      this.log.warn({ ...logFields, kind: m.subject, err: describe(err) }, 'status address message not sent')
      return null
    }
  }

  /** `death` on the status link, waited for (its outcome, at most DEATH_WAIT_MS) so it is on the broker before the close. */
  private async sendDeath(): Promise<void> {
    const ctx = this.statusContext()
    if (!ctx || !this.linkState.connected) return
    const d = this.sendStatus(deathMessage(ctx, Date.now(), ++this.statusSeq), {})
    if (!d) return
    const sender = this.statusSender!
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { cleanup(); this.log.warn({ waitedMs: DEATH_WAIT_MS }, 'death message not settled by the broker in time: closing anyway'); resolve() }, DEATH_WAIT_MS)
      const done = (ctx2: EventContext): void => { if (ctx2.delivery === d) { cleanup(); resolve() } }
      const cleanup = (): void => { clearTimeout(t); for (const ev of ['accepted', 'released', 'rejected', 'settled']) sender.removeListener(ev, done) }
      for (const ev of ['accepted', 'released', 'rejected', 'settled']) sender.on(ev, done)
    })
  }

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
    this.replies.close()
    const conn = this.conn
    if (conn) {
      await this.sendDeath()
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

  /**
   * Options for one connection to the broker (may throw, e.g. on an unreadable TLS file). `suffix` makes the container
   * id of a second connection distinct: some brokers (ActiveMQ) refuse two connections with one container id.
   */
  private connectionOptions(suffix = ''): ConnectionOptions {
    const cfg = this.cfg
    const mech = saslMechanism(cfg)
    const mechanisms = saslMechanisms(mech, cfg.username, cfg.password)
    const tls = cfg.tls
    const node = this.hosts[this.hostIndex]!
    const base = {
      host: node.host,
      port: node.port,
      // One connection per attempt and no rhea reconnect: rhea would keep unsettled deliveries half-owned across
      // links; here the outbox owns them and the forwarder resends after a new link is up.
      reconnect: false,
      container_id: `${cfg.containerId ?? `edgeway-${this.gatewayId}-${this.name}`}${suffix}`,
      hostname: cfg.hostname ?? (cfg.vhost !== undefined ? `vhost:${cfg.vhost}` : node.host),
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
    const servername = tls?.servername ?? (isIP(node.host) ? undefined : node.host)
    return (tls
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
  }

  /** One attempt on the current node: the quorum-queue check first when configured (queue-check.ts), then AMQP 1.0. */
  private connect(): void {
    if (this.closed || !this.container) return
    const cfg = this.cfg
    const queue = cfg.queue && quorumQueueName(cfg)
    if (!cfg.queue || !queue) { this.open(); return }
    const node = this.hosts[this.hostIndex]!
    const name = expandAddress(queue, this.gatewayId)
    void checkQuorumQueue(cfg, node.host, node.port, name, cfg.queue.declare, cfg.connectTimeoutMs).then((r) => {
      if (this.closed) return
      if (r.ok) {
        if (r.created) this.log.info({ url: this.url, queue: name }, 'declared the quorum queue')
        if (r.unverified && !this.queueWarned) { this.queueWarned = true; this.log.warn({ url: this.url, queue: name, err: r.unverified }, 'quorum queue type not verified') }
        this.open()
        return
      }
      // Readings stay in the outbox; the check runs again on every attempt, so a fix by the operator is picked up.
      if (r.permanent) this.log.error({ url: this.url, queue: name, err: r.error }, 'quorum queue check failed: nothing is sent until it passes')
      this.linkState.noteError(r.error)
      this.nextHost()
      this.linkState.down(() => this.connect(), this.closed)
    })
  }

  private open(): void {
    if (this.closed || !this.container) return
    const cfg = this.cfg
    // The attempt timeout covers TCP, TLS, SASL, open and the sender attach: cfg.connectTimeoutMs at most, shorter
    // once a setup to this broker is known to take less (link-state.ts), so a hanging attempt is not waited out.
    const timeoutMs = this.linkState.beginAttempt(cfg.connectTimeoutMs)
    let conn: Connection
    try {
      conn = this.container.connect(this.connectionOptions())
    } catch (err) {
      // e.g. an unreadable TLS file: same path as a failed attempt, so it is logged and retried, never fatal.
      this.linkState.noteError(describe(err))
      this.nextHost()
      this.linkState.down(() => this.connect(), this.closed)
      return
    }
    this.conn = conn
    this.inflight = 0
    const mine = (): boolean => this.conn === conn
    this.connectTimer = setTimeout(() => {
      if (!mine() || this.linkState.connected) return
      this.linkState.attemptTimedOut(`no AMQP open and attach within ${timeoutMs} ms`)
      this.down(conn)
    }, timeoutMs)

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
      this.onCommandMessage(ctx.message)
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

  private onCommandMessage(message: NonNullable<EventContext['message']>): void {
    const raw = message.body as unknown
    // A data section arrives as a section object; anything else is an AMQP value already.
    const body = raw && typeof raw === 'object' && (raw as { typecode?: unknown }).typecode === 0x75 ? (raw as { content: Buffer }).content : raw
    const parsed = amqpToCommand({ ...(message as unknown as AmqpCommandIn), body }, Date.now())
    if (!parsed.ok) {
      this.log.warn({ id: parsed.id, err: parsed.error }, 'bad command message')
      this.reply(parsed.replyTo, { id: parsed.id, device: parsed.device, name: parsed.name, ok: false, code: 'bad_request', error: parsed.error })
      return
    }
    const cmd = parsed.command
    this.log.info({ id: cmd.id, device: cmd.device, command: cmd.name }, 'command received')
    this.commandHandler!(cmd).then((r) => {
      if (!r.ok) this.log.warn({ id: r.id, device: r.device, command: r.name, code: r.code, err: r.error }, 'command failed')
      this.reply(parsed.replyTo, r)
    }, (err: unknown) => {
      this.reply(parsed.replyTo, { id: cmd.id, device: cmd.device, name: cmd.name, ok: false, code: 'send_failed', error: describe(err) })
    })
  }

  /** Sends a command result to `replyTo`, over the reply connection (see ReplyChannel): never this one. */
  private reply(replyTo: string | null, r: CommandResult): void {
    if (!replyTo) { this.log.info({ id: r.id, ok: r.ok }, 'command had no reply_to: result not sent'); return }
    this.replies.send(replyTo, commandReply(r, replyTo, this.gatewayId))
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

  /**
   * The status link of this connection: `birth` first (sent here, before any reading: rhea sends a session's
   * deliveries in order, and none are handed over before up()), then a heartbeat now and every heartbeatSeconds.
   * Best effort, not from the outbox: a fleet tool goes by the TTLs and the next birth.
   */
  private startStatus(conn: Connection): void {
    const cfg = this.cfg
    if (!cfg.statusAddress) return
    const address = expandAddress(cfg.statusAddress, this.gatewayId)
    this.statusSender = conn.open_sender({ target: cfg.durableTarget ? { address, durable: 1 } : { address }, autosettle: true })
    const ctx = this.statusContext()!
    const l = this.lifecycle
    this.sendStatus(birthMessage(ctx, l, this.devices(), Date.now(), ++this.statusSeq), {})
    const beat = (): void => {
      if (this.conn !== conn || !this.statusSender) return
      const snapshot = this.statusSource ? this.statusSource() : Promise.resolve({})
      snapshot.then((snap) => {
        if (this.conn !== conn || !this.statusSender) return
        this.sendStatus(heartbeatMessage(ctx, snap, this.devices(), Date.now(), ++this.statusSeq), {})
      }, (err: unknown) => this.log.warn({ err: describe(err) }, 'status snapshot failed'))
    }
    beat()
    this.heartbeat = setInterval(beat, cfg.heartbeatSeconds * 1000)
  }

  private devices(): ReturnType<GatewayLifecycle['devices']> {
    try { return this.lifecycle.devices() } catch (err) {
      this.log.warn({ err: describe(err) }, 'device list for the status address failed')
      return []
    }
  }

  private up(): void {
    if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null }
    if (this.conn) this.startStatus(this.conn)
    const node = this.hosts[this.hostIndex]!
    this.log.info({ url: this.url, endpoint: `${node.host}:${node.port}`, ...(this.hosts.length > 1 ? { node: this.hostIndex + 1, of: this.hosts.length } : {}), address: this.cfg.address, delivery: this.cfg.delivery }, 'upstream connected')
    this.linkState.up()
  }

  /** Forget everything of `conn` (its unsettled rows are released by the forwarder on the state change). */
  private drop(conn: Connection): void {
    if (this.conn === conn) this.conn = null
    if (this.connectTimer) { clearTimeout(this.connectTimer); this.connectTimer = null }
    this.links.clear()
    this.unsettled.clear()
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
    // A cluster: the next attempt goes to the next node (this one just failed or went away).
    this.nextHost()
    this.linkState.down(() => this.connect(), this.closed)
  }

  /**
   * `edgeway doctor` (doctor.ts): on each node, a connection of its own (never the running gateway's) that attaches a
   * sender to every address the gateway sends to, and sends one probe (subject PROBE_SUBJECT, application property
   * `probe: true`, not durable, TTL 1 s) to the telemetry address only: that proves the user's write and topic
   * permissions for the routing key. The status address is attached to but gets no message (fleet tools see only
   * the lifecycle contract there), so its topic permission is not proven. Nothing touches the outbox.
   */
  async probe(timeoutMs: number): Promise<ProbeResult[]> {
    const out: ProbeResult[] = []
    this.container ??= createContainer(`${this.cfg.containerId ?? `edgeway-${this.gatewayId}-${this.name}`}-doctor`)
    this.container.on('error', () => undefined)
    const telemetry = expandAddress(this.cfg.address, this.gatewayId, PROBE_DEVICE)
    const targets: { address: string; send: boolean }[] = [{ address: telemetry, send: true }]
    if (this.cfg.statusAddress) targets.push({ address: expandAddress(this.cfg.statusAddress, this.gatewayId), send: false })
    for (let i = 0; i < this.hosts.length; i++) {
      this.hostIndex = i
      const endpoint = `${this.hosts[i]!.host}:${this.hosts[i]!.port}`
      for (const t of targets) out.push({ endpoint, address: t.address, sent: t.send, ...await this.probeOne(t.address, t.send, timeoutMs) })
    }
    return out
  }

  private probeOne(address: string, send: boolean, timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
    return new Promise((resolve) => {
      let conn: Connection
      try { conn = this.container!.connect(this.connectionOptions('-doctor')) } catch (err) { resolve({ ok: false, detail: describe(err) }); return }
      let done = false
      const finish = (ok: boolean, detail: string): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        try { conn.close() } catch { /* gone */ }
        const socket = (conn as unknown as { socket?: Socket }).socket
        if (socket) setTimeout(() => socket.destroy(), 500).unref()
        resolve({ ok, detail })
      }
      const timer = setTimeout(() => finish(false, `no answer within ${timeoutMs} ms`), timeoutMs)
      const fail = (what: string) => (ctx: EventContext): void => finish(false, `${what}: ${describe((ctx as EventContext & { error?: unknown }).error ?? ctx.sender?.error ?? ctx.session?.error ?? ctx.connection?.error)}`)
      conn.on('connection_error', fail('connection refused'))
      conn.on('disconnected', fail('disconnected'))
      conn.on('connection_close', fail('connection closed by the broker'))
      conn.on('session_error', fail('session ended by the broker'))
      conn.on('session_close', fail('session ended by the broker'))
      conn.on('sender_error', fail('attach refused'))
      conn.on('sender_close', fail('link closed by the broker'))
      conn.on('protocol_error', () => finish(false, 'protocol error'))
      conn.on('error', () => undefined)
      const sender = conn.open_sender({ target: this.cfg.durableTarget ? { address, durable: 1 } : { address } })
      sender.once('sendable', () => {
        if (!send) { finish(true, 'attached'); return }
        sender.send({
          subject: PROBE_SUBJECT, ttl: 1000, durable: false, content_type: 'application/json',
          application_properties: { gateway: this.gatewayId, probe: true },
          body: dataSection(Buffer.from(JSON.stringify({ probe: true, gateway: this.gatewayId }), 'utf8')),
        })
      })
      conn.on('accepted', () => finish(true, 'probe accepted'))
      conn.on('released', () => finish(false, 'probe released by the broker'))
      conn.on('rejected', (ctx: EventContext) => finish(false, `probe rejected: ${describe((ctx.delivery?.remote_state as { error?: unknown } | undefined)?.error)}`))
    })
  }

  /** For tests and logs: the address a device's readings go to. */
  addressFor(device: string): string { return expandAddress(this.cfg.address, this.gatewayId, device) }
}
