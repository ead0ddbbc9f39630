// Command replies over a connection of their own (see ReplyChannel): the requester picks reply_to, so nothing about it
// may touch the connection that carries telemetry and commands. Used by the amqp upstream (upstream.ts).
import type { Connection, ConnectionOptions, Container, Delivery, EventContext, Sender, Session } from './rhea.ts'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { AmqpReplyOut } from './map.ts'
import { FailureLog, retryWithOtherDurability } from './replies.ts'
import { describe } from './describe.ts'

/** A reply not accepted within this time (reply connection, attach and outcome together) counts as failed. */
const REPLY_TIMEOUT_MS = 10_000
/** Reply links unused this long are detached; the reply connection closes once it has none left for as long. */
const REPLY_IDLE_MS = 60_000
/** Reply links kept attached at most (least recently used idle ones are detached first). */
const MAX_REPLY_LINKS = 64
/** Durabilities learned per reply address (bounded, and only for addresses of a sane length). */
const MAX_DURABILITY_HINTS = 1024
const MAX_REMEMBERED_ADDRESS = 512
/** reply_to is the requester's text: logs and the warning limiter see at most this much of it. */
const MAX_LOGGED_ADDRESS = 256

/** One command reply on its way: settled exactly once, by the broker's outcome, a failure or the timeout. */
interface PendingReply { id: string; replyTo: string; out: AmqpReplyOut; done: boolean; timer: NodeJS.Timeout; link: ReplyLink | null; delivery: Delivery | null }
/** The sender for one reply_to address, alone on its session of the reply connection. */
interface ReplyLink {
  address: string
  durable: boolean
  /** Already the second attach (with the other durability). */
  retried: boolean
  session: Session
  sender: Sender
  open: boolean
  gone: boolean
  queue: PendingReply[]
  unsettled: Map<Delivery, PendingReply>
  lastUsed: number
}

/**
 * Command replies. reply_to is chosen by whoever sent the command, so nothing about it may touch the connection that
 * carries telemetry and commands: RabbitMQ 3.10 ends a whole session when an attach is refused (durability mismatch,
 * no such exchange, bad address) and resets the whole connection on some addresses (`/temp-queue/...`). Replies go
 * over a connection of their own (opened on demand, closed when idle), each reply_to address on its own session, with
 * the durability the queue has (the configured one first, the other after a precondition-failed refusal; what
 * worked is remembered). A reply that cannot be delivered is counted and warned about at a limited rate.
 */
export class ReplyChannel {
  sent = 0
  failed = 0
  private conn: Connection | null = null
  private readonly links = new Map<string, ReplyLink>()
  private readonly durability = new Map<string, boolean>()
  private readonly failures = new FailureLog()
  private sweep: NodeJS.Timeout | null = null
  private lastUsed = 0
  private closed = false

  constructor(
    private readonly container: () => Container | null,
    private readonly options: () => ConnectionOptions,
    private readonly durableFirst: boolean,
    private readonly log: Logger,
    /** rhea's data section for a binary body (from ./rhea.ts, passed in). */
    private readonly dataSection: (body: Buffer) => unknown,
  ) {}

  send(replyTo: string, out: AmqpReplyOut): void {
    const p: PendingReply = { id: out.correlation_id, replyTo, out, done: false, link: null, delivery: null, timer: setTimeout(() => this.timedOut(p), REPLY_TIMEOUT_MS) }
    if (this.closed) { this.fail(p, 'upstream closed'); return }
    const conn = this.connection()
    if (typeof conn === 'string') { this.fail(p, `reply connection: ${conn}`); return }
    const now = Date.now()
    let l = this.links.get(replyTo)
    if (l) this.links.delete(replyTo) // re-inserted below: the map is kept in least-recently-used order
    else { this.evict(); l = this.attach(conn, replyTo, this.durability.get(replyTo) ?? this.durableFirst, false) }
    this.links.set(replyTo, l)
    l.lastUsed = now
    this.lastUsed = now
    p.link = l
    l.queue.push(p)
    this.flush(l)
  }

  /** Fails what is still on its way and closes the reply connection. */
  close(): void {
    this.closed = true
    if (this.conn) this.connectionGone(this.conn, 'upstream closed')
  }

  private connection(): Connection | string {
    if (this.conn) return this.conn
    const container = this.container()
    if (!container) return 'upstream not started'
    let conn: Connection
    try { conn = container.connect(this.options()) } catch (err) { return describe(err) }
    this.conn = conn
    const gone = (why: string): void => { if (this.conn === conn) this.connectionGone(conn, why) }
    conn.on('connection_open', () => { if (this.conn === conn) this.log.debug('reply connection open') })
    conn.on('connection_error', (ctx: EventContext) => gone(`reply connection refused: ${describe((ctx as EventContext & { error?: unknown }).error ?? ctx.connection.error)}`))
    conn.on('connection_close', (ctx: EventContext) => gone(`reply connection closed by the broker${ctx.connection.error ? `: ${describe(ctx.connection.error)}` : ''}`))
    conn.on('disconnected', (ctx: EventContext) => gone(`reply connection lost: ${describe(ctx.error ?? 'disconnected')}`))
    conn.on('protocol_error', (err: unknown) => gone(`reply connection protocol error: ${describe(err)}`))
    conn.on('error', (err: unknown) => this.log.debug({ err: describe(err) }, 'amqp error on the reply connection'))
    // Sessions and links have handlers of their own; whatever still bubbles up to the connection stops here.
    for (const ev of ['session_open', 'session_error', 'session_close', 'sender_open', 'sender_error', 'sender_close', 'sendable', 'accepted', 'released', 'rejected', 'modified', 'settled']) conn.on(ev, () => undefined)
    this.sweep = setInterval(() => this.idle(conn), REPLY_IDLE_MS / 2)
    this.sweep.unref()
    return conn
  }

  private attach(conn: Connection, address: string, durable: boolean, retried: boolean): ReplyLink {
    const session = conn.create_session()
    session.begin()
    const sender = session.open_sender({ target: durable ? { address, durable: 1 } : { address }, autosettle: true })
    const l: ReplyLink = { address, durable, retried, session, sender, open: false, gone: false, queue: [], unsettled: new Map(), lastUsed: Date.now() }
    sender.on('sender_open', () => {
      // A null target in the answer is a refusal (AMQP 1.0 2.6.3): the detach with the reason follows.
      if (l.gone || !(sender as Sender & { remote?: { attach?: { target?: unknown } } }).remote?.attach?.target) return
      l.open = true
      this.remember(address, durable)
      this.flush(l)
    })
    sender.on('sendable', () => this.flush(l))
    sender.on('accepted', (ctx: EventContext) => this.outcome(l, ctx.delivery, null))
    // rhea reports `modified` as `released` too.
    sender.on('released', (ctx: EventContext) => this.outcome(l, ctx.delivery, 'released by the broker'))
    sender.on('rejected', (ctx: EventContext) => {
      const state = ctx.delivery?.remote_state as { error?: unknown } | undefined
      this.outcome(l, ctx.delivery, `rejected by the broker: ${state?.error ? describe(state.error) : 'no reason given'}`)
    })
    sender.on('settled', (ctx: EventContext) => this.outcome(l, ctx.delivery, 'settled by the broker without an outcome'))
    sender.on('sender_error', () => this.linkGone(l, sender.error))
    sender.on('sender_close', () => this.linkGone(l, sender.error))
    session.on('session_open', () => undefined)
    session.on('session_error', () => this.linkGone(l, session.error))
    session.on('session_close', () => this.linkGone(l, session.error))
    return l
  }

  private flush(l: ReplyLink): void {
    while (l.open && !l.gone && l.queue.length > 0 && l.sender.sendable()) {
      const p = l.queue.shift()!
      if (p.done) continue
      const d = l.sender.send({ ...p.out, body: this.dataSection(p.out.body) })
      p.delivery = d
      l.unsettled.set(d, p)
    }
  }

  private outcome(l: ReplyLink, d: Delivery | undefined, error: string | null): void {
    const p = d && l.unsettled.get(d)
    if (!p) return
    l.unsettled.delete(d)
    if (error) { this.fail(p, error); return }
    if (p.done) return
    p.done = true
    clearTimeout(p.timer)
    this.sent++
    this.log.debug({ id: p.id, replyTo: p.replyTo }, 'command reply accepted')
  }

  /** The broker ended the link or its session: a refused attach may be retried once, the rest fails. */
  private linkGone(l: ReplyLink, err: unknown): void {
    if (l.gone) return
    this.discard(l)
    const conn = this.conn
    const condition = (err as { condition?: unknown } | undefined)?.condition
    const waiting = l.queue.filter((p) => !p.done)
    if (conn && waiting.length > 0 && retryWithOtherDurability(condition, l.open, l.retried)) {
      this.log.debug({ address: l.address, durable: !l.durable, err: describe(err) }, 'reply address refused: attaching again with the other durability')
      const next = this.attach(conn, l.address, !l.durable, true)
      next.queue = waiting
      for (const p of waiting) p.link = next
      this.links.set(l.address, next)
      return
    }
    const reason = `reply link refused: ${describe(err ?? 'closed by the broker')}`
    for (const p of [...l.queue, ...l.unsettled.values()]) this.fail(p, reason)
    l.queue = []
    l.unsettled.clear()
  }

  /** Forgets the link and ends its session (which detaches it); what waits on it is the caller's. */
  private discard(l: ReplyLink): void {
    l.gone = true
    if (this.links.get(l.address) === l) this.links.delete(l.address)
    try { l.session.close() } catch { /* already gone */ }
  }

  private timedOut(p: PendingReply): void {
    if (p.done) return
    const why = `no outcome within ${REPLY_TIMEOUT_MS} ms`
    const l = p.link
    const conn = this.conn
    if (conn && !conn.is_open()) {
      // The reply connection never opened: start over on the next reply.
      this.connectionGone(conn, `reply connection not open: ${why}`)
      return
    }
    if (l && !l.gone) {
      if (p.delivery) l.unsettled.delete(p.delivery)
      else if (!l.open) {
        // An attach without an answer: what waits on it fails with it, the next reply attaches afresh.
        this.discard(l)
        for (const q of l.queue) this.fail(q, `reply link not attached: ${why}`)
        l.queue = []
        return
      } else l.queue = l.queue.filter((q) => q !== p)
    }
    this.fail(p, why)
  }

  private fail(p: PendingReply, reason: string): void {
    if (p.done) return
    p.done = true
    clearTimeout(p.timer)
    this.failed++
    const replyTo = p.replyTo.length > MAX_LOGGED_ADDRESS ? `${p.replyTo.slice(0, MAX_LOGGED_ADDRESS)}...` : p.replyTo
    const suppressed = this.failures.take(replyTo, Date.now())
    const fields = { id: p.id, replyTo, err: reason.length > 2 * MAX_LOGGED_ADDRESS ? `${reason.slice(0, 2 * MAX_LOGGED_ADDRESS)}...` : reason, repliesFailed: this.failed }
    if (suppressed === null) this.log.debug(fields, 'command reply could not be delivered (warned about recently)')
    else this.log.warn(suppressed > 0 ? { ...fields, suppressedSinceLastWarning: suppressed } : fields, 'command reply could not be delivered')
  }

  /** Detaches the least recently used idle link once MAX_REPLY_LINKS are attached. */
  private evict(): void {
    if (this.links.size < MAX_REPLY_LINKS) return
    for (const l of this.links.values()) {
      if (l.queue.length === 0 && l.unsettled.size === 0) { this.discard(l); return }
    }
  }

  private remember(address: string, durable: boolean): void {
    if (address.length > MAX_REMEMBERED_ADDRESS) return
    this.durability.delete(address)
    this.durability.set(address, durable)
    if (this.durability.size > MAX_DURABILITY_HINTS) this.durability.delete(this.durability.keys().next().value!)
  }

  private idle(conn: Connection): void {
    const now = Date.now()
    for (const l of [...this.links.values()]) {
      if (now - l.lastUsed >= REPLY_IDLE_MS && l.queue.length === 0 && l.unsettled.size === 0) this.discard(l)
    }
    if (this.links.size === 0 && now - this.lastUsed >= REPLY_IDLE_MS) this.connectionGone(conn, 'idle')
  }

  /** The reply connection is gone (or closed here): everything on it fails; the next reply opens a new one. */
  private connectionGone(conn: Connection, why: string): void {
    if (this.conn !== conn) return
    this.conn = null
    if (this.sweep) { clearInterval(this.sweep); this.sweep = null }
    const links = [...this.links.values()]
    this.links.clear()
    for (const l of links) {
      l.gone = true
      for (const p of [...l.queue, ...l.unsettled.values()]) this.fail(p, why)
    }
    const socket = (conn as unknown as { socket?: Socket }).socket
    try { conn.close() } catch { /* already gone */ }
    if (socket) setTimeout(() => socket.destroy(), 1000).unref()
  }
}

