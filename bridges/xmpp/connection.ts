// The one file that imports xmpp.js (@xmpp/component, @xmpp/client). It keeps one XMPP stream up,
// reconnecting with our backoff (xmpp.js's own fixed-delay reconnect is switched off), and hands stanzas to the bridge
// as plain XmlNode trees. Component mode: a fresh entity per attempt. Client mode: while the server keeps a resumable
// XEP-0198 session, the SAME entity reconnects (its stream-management state: id, h counters, unacked queue) and
// resumes; otherwise (no SM, resume refused) a fresh session. Stanzas sent while the link is down wait in `pending`.
import componentPkg, { type Entity, type Element, type XmlFactory } from '@xmpp/component'
import { client, xml as clientXml } from '@xmpp/client'
import type { Logger } from 'pino'
import { Backoff } from '../../gateway/upstream/backoff.ts'
import type { XmppConfig } from './config.ts'
import type { XmlNode } from './stanza.ts'

/** What the bridge answers to an iq get/set: a result payload (or none), or a stanza error. */
export type IqAnswer = { payload?: XmlNode } | { error: { type: 'cancel' | 'modify' | 'auth' | 'wait'; condition: string; text?: string } }

export class IqError extends Error {
  constructor(readonly condition: string, readonly type: string, readonly text: string) {
    super(text ? `${condition}: ${text}` : condition)
    this.name = 'IqError'
  }
}

export interface XmppLinkEvents {
  /** `resumed`: the XEP-0198 session was resumed (the server kept presence, roster, subscriptions; nothing to redo). */
  online: (jid: string, resumed: boolean) => void
  offline: (reason: string) => void
  stanza: (s: XmlNode) => void
  iq: (s: XmlNode) => Promise<IqAnswer> | IqAnswer
}

/** Elements are made with the xml factory of the package in use: xmpp.js checks replies with `instanceof`. */
function toElement(xml: XmlFactory, n: XmlNode): Element {
  const attrs: Record<string, string> = {}
  for (const [k, v] of Object.entries(n.attrs)) if (v !== undefined) attrs[k] = v
  return xml(n.name, attrs, ...n.children.map((c) => (typeof c === 'string' ? c : toElement(xml, c))))
}

function fromElement(e: Element): XmlNode {
  return { name: e.name, attrs: { ...e.attrs }, children: e.children.map((c) => (typeof c === 'string' ? c : fromElement(c))) }
}

function describe(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { condition?: unknown; text?: unknown; message?: unknown; code?: unknown }
    if (typeof e.condition === 'string') return `${e.condition}${e.text ? `: ${String(e.text)}` : ''}`
    if (typeof e.message === 'string') return `${typeof e.code === 'string' ? `${e.code} ` : ''}${e.message}`
  }
  return String(err)
}

const NS_SM = 'urn:xmpp:sm:3'
/** An attempt that neither comes online nor fails by then is abandoned (a peer can stall a half-open stream). */
const ATTEMPT_TIMEOUT_MS = 10_000
/** Stanzas kept while the link is down (client mode); beyond this the oldest are dropped and counted. */
const PENDING_MAX = 1000

export class XmppLink {
  private entity: Entity | null = null
  private closed = false
  private retry: NodeJS.Timeout | null = null
  private watchdog: NodeJS.Timeout | null = null
  private readonly backoff: Backoff
  private isOnline = false
  private downLogged = false
  private lastError: string | null = null
  /** The attempt whose login or handshake the server refused (its reason outlives the socket errors after it). */
  private refusedIn = 0
  private handlers: Partial<XmppLinkEvents> = {}
  private readonly xml: XmlFactory
  /** Bumped per connect attempt: a late rejection of an older attempt must not tear down the current one. */
  private attempt = 0
  /** The current attempt is a XEP-0198 resume of this session id. */
  private resuming = ''
  private smNoticeLogged = false
  /** One "resuming" info line per outage (later attempts at debug). */
  private resumeLogged = false
  /** Client mode: stanzas the bridge sent while the link was down, sent on the next online (resumed or fresh). */
  private pending: Element[] = []
  private droppedWhileDown = 0
  /** Unacked stanzas of a session the server would not resume (xmpp.js emits them as "fail"). */
  private unacked: Element[] = []
  /** component domain, or the client's full JID once bound. */
  jid = ''

  constructor(private readonly cfg: XmppConfig, private readonly log: Logger) {
    // Capped at ~1 s for the first minute of an outage, then growing to reconnectMaxMs; reset once online (backoff.ts).
    this.backoff = new Backoff(cfg.reconnectMinMs, cfg.reconnectMaxMs, { shortOutage: {} })
    this.xml = cfg.mode === 'component' ? componentPkg.xml : clientXml
  }

  get online(): boolean { return this.isOnline }
  get error(): string | null { return this.lastError }
  /** Stanzas waiting for the link to come back. */
  get queued(): number { return this.pending.length }

  on<K extends keyof XmppLinkEvents>(event: K, fn: XmppLinkEvents[K]): void { this.handlers[event] = fn }

  get service(): string {
    const port = this.cfg.server.port ?? (this.cfg.mode === 'component' ? 5347 : 5222)
    return `${this.cfg.tls.mode === 'direct' ? 'xmpps' : 'xmpp'}://${this.cfg.server.host}:${port}`
  }

  start(): void {
    this.closed = false
    this.connect()
  }

  async stop(): Promise<void> {
    this.closed = true
    if (this.retry) clearTimeout(this.retry)
    this.retry = null
    if (this.watchdog) clearTimeout(this.watchdog)
    this.watchdog = null
    const e = this.entity
    this.entity = null
    if (e) await this.dispose(e, true)
    const lost = this.pending.length + this.unacked.length
    if (lost) this.log.warn({ stanzas: lost }, 'xmpp stopped with stanzas not sent (the link was down)')
    this.pending = []
    this.unacked = []
    if (this.isOnline) { this.isOnline = false; this.handlers.offline?.('stopped') }
  }

  /**
   * Fire and forget. Online: written (client mode with SM: kept by xmpp.js until the server acks it, resent after a
   * resume). Link down, client mode: queued and sent when the link is back. Component mode: dropped and counted.
   */
  send(n: XmlNode): void {
    const e = this.entity
    if (!e || !this.isOnline) {
      if (this.cfg.mode === 'client' && !this.closed) {
        this.pending.push(toElement(this.xml, n))
        if (this.pending.length > PENDING_MAX) { this.pending.shift(); this.droppedWhileDown++ }
        this.log.debug({ stanza: n.name, to: n.attrs.to, queued: this.pending.length }, 'xmpp offline: stanza held')
      } else {
        this.droppedWhileDown++
        this.log.debug({ stanza: n.name, to: n.attrs.to }, 'xmpp offline: stanza not sent')
      }
      return
    }
    this.write(e, toElement(this.xml, n))
  }

  private write(e: Entity, el: Element): void {
    e.send(el).catch((err: unknown) => this.log.warn({ err: describe(err), stanza: el.name, to: el.attrs.to }, 'xmpp send failed'))
  }

  /** Sends an iq get/set and resolves with the result stanza; rejects with IqError on an error reply, Error on timeout. */
  async request(n: XmlNode, timeoutMs: number): Promise<XmlNode> {
    const e = this.entity
    if (!e || !this.isOnline) throw new Error('xmpp link is down')
    try {
      return fromElement(await e.iqCaller.request(toElement(this.xml, n), timeoutMs))
    } catch (err) {
      const x = err as { name?: string; condition?: string; type?: string; text?: string }
      if (x.name === 'StanzaError' && x.condition) throw new IqError(x.condition, x.type ?? 'cancel', x.text ?? '')
      throw err instanceof Error ? err : new Error(describe(err))
    }
  }

  private create(): Entity {
    const cfg = this.cfg
    if (cfg.mode === 'component') return componentPkg.component({ service: this.service, domain: cfg.component.domain!, password: cfg.component.secret! })
    const [bare, resource] = cfg.client.jid!.split('/', 2) as [string, string | undefined]
    const [username, domain] = bare.split('@') as [string, string]
    return client({ service: this.service, domain, username, password: cfg.client.password!, ...(resource ? { resource } : {}) })
  }

  private connect(): void {
    if (this.closed) return
    const attempt = ++this.attempt
    if (this.watchdog) clearTimeout(this.watchdog)
    this.watchdog = setTimeout(() => {
      this.watchdog = null
      if (attempt !== this.attempt || this.isOnline || this.retry || this.closed) return
      this.lastError = `no session within ${ATTEMPT_TIMEOUT_MS} ms`
      this.log.warn({ service: this.service }, 'xmpp connect attempt stalled: abandoning it')
      try { this.entity?.socket?.destroy?.() } catch { /* gone */ }
      this.lost()
    }, ATTEMPT_TIMEOUT_MS)
    let e = this.entity
    if (e) {
      // A resumable XEP-0198 session: reopen the same entity (as @xmpp/reconnect does); its stream-features step
      // sends <resume h previd> after SASL and falls back to bind + enable when the server answers <failed/>.
      const sm = e.streamManagement
      this.resuming = sm?.id ?? ''
      const fields = { service: this.service, previd: this.resuming, unacked: sm?.outbound_q.length ?? 0, queued: this.pending.length }
      if (this.resumeLogged) this.log.debug(fields, 'xmpp reconnecting: resuming the stream (XEP-0198)')
      else this.log.info(fields, 'xmpp reconnecting: resuming the stream (XEP-0198)')
      this.resumeLogged = true
    } else {
      try {
        e = this.create()
      } catch (err) {
        this.failed(describe(err))
        return
      }
      this.resuming = ''
      e.reconnect.stop()
      this.entity = e
      this.wire(e)
    }
    // connect + open rather than entity.start(): start() leaves its "online" promise unhandled when the socket errors
    // while the stream opens (an unhandled rejection kills the process). "online" / "resumed" events bring it up.
    const ent = e
    const { domain, lang } = ent.options
    ent.connect(this.service).then(() => ent.open({ domain, ...(lang ? { lang } : {}) })).catch((err: unknown) => {
      if (attempt !== this.attempt || this.entity !== ent) return
      if (!this.lastError) this.lastError = describe(err)
      this.lost()
    })
  }

  /** Listeners, once per entity (a kept client entity keeps them across reconnects). */
  private wire(e: Entity): void {
    const cfg = this.cfg
    const mine = (): boolean => this.entity === e
    e.on('error', (err: unknown) => {
      if (!mine()) return
      const msg = describe(err)
      // A refused handshake/login never heals by itself: say what to fix.
      if (/not-authorized|Given token does not match/.test(msg)) {
        this.refusedIn = this.attempt
        this.lastError = cfg.mode === 'component'
          ? `the server refused the component secret for ${cfg.component.domain} (${msg}): check xmpp.component.secret against the server's component_secret`
          : `the server refused the login of ${cfg.client.jid} (${msg}): check xmpp.client.password`
      // the server closes the socket after refusing: the reset that follows (ECONNRESET) must not hide the reason
      } else if (this.refusedIn !== this.attempt) this.lastError = msg
    })
    e.on('offline', () => { if (mine()) this.lost() })
    e.on('disconnect', () => { if (mine()) this.lost() })
    e.on('online', (jid: unknown) => { if (mine()) this.up(String(jid), false) })
    const sm = e.streamManagement
    if (sm) {
      sm.on('resumed', () => {
        if (!mine()) return
        // xmpp.js marks the entity online right after this event.
        setImmediate(() => { if (mine() && e.status === 'online') this.up(this.jid, true) })
      })
      sm.on('fail', (stanza: Element) => { if (mine() && !this.closed) this.unacked.push(stanza) })
      e.on('nonza', (el: Element) => {
        if (!mine()) return
        if (el.is('enabled', NS_SM)) {
          this.log.info({ id: el.attrs.id ?? null, resumable: el.attrs.resume === 'true' || el.attrs.resume === '1', max: el.attrs.max ?? null }, 'xmpp stream management enabled (XEP-0198)')
        } else if (el.is('failed', NS_SM)) {
          const condition = el.children.find((c): c is Element => typeof c !== 'string')?.name ?? 'unknown'
          if (this.resuming) this.log.warn({ previd: this.resuming, condition, unacked: sm.outbound_q.length, queued: this.pending.length }, 'xmpp stream resume failed: starting a fresh session')
          else this.log.warn({ condition }, 'xmpp server refused stream management (XEP-0198): a drop will start a fresh session')
          this.resuming = ''
        } else if (el.is('features', 'http://etherx.jabber.org/streams') && el.getChild('bind', 'urn:ietf:params:xml:ns:xmpp-bind') && !el.getChild('sm', NS_SM) && !this.smNoticeLogged) {
          this.smNoticeLogged = true
          this.log.warn({ service: this.service }, 'xmpp server offers no stream management (XEP-0198): a drop starts a fresh session, stanzas in flight may be lost')
        }
      })
    }
    e.middleware.use(async (ctx) => {
      if (!mine()) return undefined
      // Stanzas only (the component handshake and stream errors pass through here too).
      if (!['iq', 'message', 'presence'].includes(ctx.stanza.name)) return undefined
      const s = fromElement(ctx.stanza)
      const t = s.attrs.type
      if (s.name === 'iq' && (t === 'get' || t === 'set')) {
        // xmpp.js's iq callee (before this middleware) turns the answer into the result / error reply.
        const a = await (this.handlers.iq?.(s) ?? { error: { type: 'cancel' as const, condition: 'service-unavailable' } })
        const xml = this.xml
        if ('error' in a) return xml('error', { type: a.error.type }, xml(a.error.condition, { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }), ...(a.error.text ? [xml('text', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }, a.error.text)] : []))
        return a.payload ? toElement(this.xml, a.payload) : true
      }
      try { this.handlers.stanza?.(s) } catch (err) { this.log.error({ err: describe(err), stanza: s.name }, 'xmpp stanza handler failed') }
      return undefined
    })
  }

  /** Online: a fresh session (`online` event) or a resumed one (the server kept everything, xmpp.js resent the unacked). */
  private up(jid: string, resumed: boolean): void {
    const e = this.entity
    if (!e) return
    this.jid = jid
    this.isOnline = true
    this.backoff.reset()
    this.downLogged = false
    this.lastError = null
    const previd = this.resuming
    this.resuming = ''
    this.resumeLogged = false
    if (resumed) {
      this.log.info({ service: this.service, jid, previd, resent: e.streamManagement?.outbound_q.length ?? 0, queued: this.pending.length }, 'xmpp stream resumed (XEP-0198)')
    } else {
      this.log.info({ service: this.service, jid, mode: this.cfg.mode }, 'xmpp connected')
    }
    // A session the server would not resume: its unacknowledged messages (alerts, replies) are sent again — they may
    // have reached the server before the drop, so a duplicate is possible; the rest (presence, iq) is redone anyway.
    const unacked = this.unacked
    this.unacked = []
    const again = unacked.filter((s) => s.name === 'message')
    if (unacked.length) this.log.warn({ messagesResent: again.length, otherDropped: unacked.length - again.length }, 'xmpp: stanzas unacknowledged by the lost session')
    if (this.droppedWhileDown) this.log.warn({ stanzas: this.droppedWhileDown }, this.cfg.mode === 'client' ? 'xmpp: stanzas dropped while the link was down (queue full)' : 'xmpp: stanzas not sent while the link was down')
    this.droppedWhileDown = 0
    const queued = [...again, ...this.pending]
    this.pending = []
    for (const el of queued) this.write(e, el)
    this.handlers.online?.(jid, resumed)
  }

  /** The stream is gone (or never came up): keep a resumable client entity, else forget it; retry after a backoff delay. */
  private lost(): void {
    const e = this.entity
    if (!e || this.retry) return
    const resumable = this.cfg.mode === 'client' && !this.closed && !!e.streamManagement?.id
    if (resumable) {
      // The socket may still be open after a failed open(): the next attempt needs a clean start.
      if (e.socket) { try { e.socket.destroy?.() } catch { /* gone */ } }
    } else {
      this.entity = null
      void this.dispose(e, false)
    }
    const wasOnline = this.isOnline
    this.isOnline = false
    if (wasOnline) this.handlers.offline?.(this.lastError ?? 'connection closed')
    this.failed(this.lastError ?? 'connection closed', wasOnline)
  }

  private failed(err: string, wasOnline = false): void {
    this.lastError = err
    if (this.closed) return
    const delay = this.backoff.next()
    const fields = { service: this.service, err, retryInMs: delay }
    if (wasOnline) this.log.warn(fields, 'xmpp link down: reconnecting with backoff')
    else if (!this.downLogged) this.log.error(fields, 'xmpp connect failed: retrying with backoff')
    else this.log.debug(fields, 'xmpp connect failed again')
    this.downLogged = true
    if (this.retry) clearTimeout(this.retry)
    this.retry = setTimeout(() => { this.retry = null; this.connect() }, delay)
  }

  private async dispose(e: Entity, graceful: boolean): Promise<void> {
    if (graceful && e.status === 'online') {
      await Promise.race([e.stop().catch(() => undefined), new Promise((r) => setTimeout(r, 1000))])
    }
    e.removeAllListeners()
    e.on('error', () => undefined)
    try { e.socket?.destroy?.() } catch { /* gone */ }
  }
}
