// The one file that imports xmpp.js (@xmpp/component, @xmpp/client, @xmpp/xml). It keeps one XMPP stream up:
// a fresh entity per attempt, reconnecting with backoff (xmpp.js's own fixed-delay reconnect is switched off), and
// hands stanzas to the bridge as plain XmlNode trees.
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
  online: (jid: string) => void
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

export class XmppLink {
  private entity: Entity | null = null
  private closed = false
  private retry: NodeJS.Timeout | null = null
  private readonly backoff: Backoff
  private isOnline = false
  private downLogged = false
  private lastError: string | null = null
  private handlers: Partial<XmppLinkEvents> = {}
  private readonly xml: XmlFactory
  /** component domain, or the client's full JID once bound. */
  jid = ''

  constructor(private readonly cfg: XmppConfig, private readonly log: Logger) {
    this.backoff = new Backoff(cfg.reconnectMinMs, cfg.reconnectMaxMs)
    this.xml = cfg.mode === 'component' ? componentPkg.xml : clientXml
  }

  get online(): boolean { return this.isOnline }
  get error(): string | null { return this.lastError }

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
    const e = this.entity
    this.entity = null
    if (e) await this.dispose(e, true)
    if (this.isOnline) { this.isOnline = false; this.handlers.offline?.('stopped') }
  }

  /** Fire and forget; a failed write is logged (the stream is going down and will be re-established). */
  send(n: XmlNode): void {
    const e = this.entity
    if (!e || !this.isOnline) { this.log.debug({ stanza: n.name, to: n.attrs.to }, 'xmpp offline: stanza not sent'); return }
    e.send(toElement(this.xml, n)).catch((err: unknown) => this.log.warn({ err: describe(err) }, 'xmpp send failed'))
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

  private connect(): void {
    if (this.closed) return
    const cfg = this.cfg
    let e: Entity
    try {
      e = cfg.mode === 'component'
        ? componentPkg.component({ service: this.service, domain: cfg.component.domain!, password: cfg.component.secret! })
        : (() => {
            const [bare, resource] = cfg.client.jid!.split('/', 2) as [string, string | undefined]
            const [username, domain] = bare.split('@') as [string, string]
            return client({ service: this.service, domain, username, password: cfg.client.password!, ...(resource ? { resource } : {}) })
          })()
    } catch (err) {
      this.failed(describe(err))
      return
    }
    e.reconnect.stop()
    this.entity = e
    const mine = (): boolean => this.entity === e
    e.on('error', (err: unknown) => {
      if (!mine()) return
      const msg = describe(err)
      // A refused handshake/login never heals by itself: say what to fix.
      if (/not-authorized|Given token does not match/.test(msg)) {
        this.lastError = cfg.mode === 'component'
          ? `the server refused the component secret for ${cfg.component.domain} (${msg}): check xmpp.component.secret against the server's component_secret`
          : `the server refused the login of ${cfg.client.jid} (${msg}): check xmpp.client.password`
      } else this.lastError = msg
    })
    e.on('offline', () => { if (mine()) this.lost() })
    e.on('disconnect', () => { if (mine()) this.lost() })
    e.on('online', (jid: unknown) => {
      if (!mine()) return
      this.jid = String(jid)
      this.isOnline = true
      this.backoff.reset()
      this.downLogged = false
      this.lastError = null
      this.log.info({ service: this.service, jid: this.jid, mode: cfg.mode }, 'xmpp connected')
      this.handlers.online?.(this.jid)
    })
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
    e.start().catch((err: unknown) => {
      if (!mine()) return
      if (!this.lastError) this.lastError = describe(err)
      this.lost()
    })
  }

  /** The stream is gone (or never came up): forget the entity, retry after a backoff delay. */
  private lost(): void {
    const e = this.entity
    if (!e) return
    this.entity = null
    void this.dispose(e, false)
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
