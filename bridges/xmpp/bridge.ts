// The XMPP bridge (component mode): every device is a contact <device>@<component domain> with presence mirroring its
// link, subscriptions gated by the allowlist and kept in SQLite, chat commands routed to the device, and the alerts
// engine's raises and clears (gateway/alerts/: offline with hold-down, thresholds, backlog, upstreams) as chat.
import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { GatewayBus, GatewayEvents } from '../../gateway/events.ts'
import type { AlertEvent } from '../../gateway/alerts/rules.ts'
import type { Command, CommandResult } from '../../gateway/commands/router.ts'
import type { XmppConfig } from './config.ts'
import { XmppLink, type IqAnswer } from './connection.ts'
import { XmppStore, xmppDbPath } from './store.ts'
import { allowed, blockedBy, jidMatches, Rhythm } from './policy.ts'
import { adhocCompleted, adhocForm, adhocList, bareJid, blockItems, chat, child, formValues, discoInfo, el, errorReply, NS, parseIncoming, presence, rosterSuggestion, type Incoming, type Show, type XmlNode } from './stanza.ts'
import { getReply, HELP, parseChat, resultReply, statusReply, summary, alertChat, unknownReply, type ChatCommand, type ContactView, type MetricValue } from './chat.ts'
import { PubSubUpstream } from './pubsub.ts'

export interface XmppBridgeDeps {
  gatewayId: string
  dataDir: string
  bus: GatewayBus
  log: Logger
  /** Every device the gateway knows (registry, connected, serial). */
  devices(): string[]
  isOnline(device: string): boolean
  dispatch(cmd: Command): Promise<CommandResult>
}

interface DeviceState {
  online: boolean
  link: string | null
  rhythm: Rhythm
  metrics: Record<string, MetricValue>
  /** Last presence sent: type/show (sent at once when it changes) and status (throttled). */
  sentKey: string | null
  sentStatus: string | null
  sentAt: number
  pending: NodeJS.Timeout | null
}

type Presence = { type: 'available' | 'unavailable'; show?: Show; status?: string }

/** A status text change alone is re-announced at most this often (a reading every 100 ms must not flood rosters). */
const STATUS_MIN_INTERVAL_MS = 5000

export class XmppBridge {
  readonly link: XmppLink
  readonly upstream: PubSubUpstream | null
  private readonly store: XmppStore
  private readonly states = new Map<string, DeviceState>()
  private ticker: NodeJS.Timeout | null = null
  private readonly domain: string
  /** Client mode: the gateway's own bare JID; devices are addressed by a prefix in the chat text. */
  private readonly clientMode: boolean
  private readonly selfBare: string
  /** Client mode: the account's server-side block list (XEP-0191), mirrored so the gateway honours it too. */
  private serverBlocked = new Set<string>()
  private selfPresence: { text: string; at: number; timer: NodeJS.Timeout | null } = { text: '', at: 0, timer: null }
  private readonly listeners: { [K in keyof GatewayEvents]?: (...a: GatewayEvents[K]) => void } = {}

  constructor(private readonly cfg: XmppConfig, private readonly d: XmppBridgeDeps) {
    this.link = new XmppLink(cfg, d.log)
    this.store = new XmppStore(xmppDbPath(d.dataDir))
    this.clientMode = cfg.mode === 'client'
    this.selfBare = (cfg.client.jid ?? '').split('/')[0]!.toLowerCase()
    this.domain = this.clientMode ? this.selfBare.split('@')[1]! : (cfg.component.domain ?? '').toLowerCase()
    this.upstream = cfg.pubsub.enabled ? new PubSubUpstream(cfg, this.link, d.gatewayId, d.log.child({ upstream: cfg.pubsub.upstream })) : null
  }

  start(): void {
    this.store.open()
    for (const dev of this.d.devices()) this.state(dev).online = this.d.isOnline(dev)
    this.listeners.deviceOnline = (e) => {
      const s = this.state(e.device)
      s.online = true
      s.link = e.link
      this.announce(e.device, true)
    }
    this.listeners.deviceOffline = (e) => {
      const s = this.state(e.device)
      s.online = false
      this.announce(e.device, true)
    }
    this.listeners.reading = (e) => this.onReading(e.device, e.link, e.metrics)
    // The engine decides when (hold-down, flapping, thresholds); the bridge only says it to whoever may hear it.
    this.listeners.alertRaised = (e) => this.onAlert(e)
    this.listeners.alertCleared = (e) => this.onAlert(e)
    for (const [k, fn] of Object.entries(this.listeners)) this.d.bus.on(k as keyof GatewayEvents, fn as never)
    this.link.on('online', (_jid, resumed) => {
      // A resumed XEP-0198 session kept presence and the block list (its pushes were queued for us): only a status
      // that changed during the drop is sent.
      if (resumed) this.announceSelf()
      else if (this.clientMode) this.clientOnline()
      else this.reannounce()
      this.upstream?.linkUp()
    })
    this.link.on('offline', (reason) => this.upstream?.linkDown(reason))
    this.link.on('stanza', (s) => this.onStanza(s))
    this.link.on('iq', (s) => this.onIq(s))
    this.link.start()
    // Overdue readings turn presence to away / xa without any event: look once a second.
    this.ticker = setInterval(() => { for (const dev of this.states.keys()) this.announce(dev, false) }, 1000)
  }

  async stop(): Promise<void> {
    if (this.ticker) clearInterval(this.ticker)
    for (const [k, fn] of Object.entries(this.listeners)) this.d.bus.off(k as keyof GatewayEvents, fn as never)
    for (const s of this.states.values()) if (s.pending) clearTimeout(s.pending)
    // Subscribers see the devices go unavailable with the gateway instead of keeping a stale "available".
    if (this.link.online && !this.clientMode) for (const { device, jid } of this.store.allSubscriptions()) this.link.send(presence(this.jidOf(device), jid, { type: 'unavailable', status: 'gateway stopped' }))
    if (this.selfPresence.timer) clearTimeout(this.selfPresence.timer)
    await this.link.stop()
    this.store.close()
  }

  /** A device's contact JID (client mode: the gateway account for every device). */
  jidOf(device: string): string { return this.clientMode ? this.selfBare : `${device.toLowerCase()}@${this.domain}` }

  /** Who hears about a device: its subscribers (client mode: the gateway's subscribers allowed that device). */
  private audience(device: string): string[] {
    // The allowlist is checked again: a subscription approved under an older config no longer hears anything.
    const subs = this.store.subscribers(this.clientMode ? '*' : device)
    return subs.filter((j) => allowed(this.cfg, j, device, 'subscribe') && !this.blocked(j))
  }

  private state(device: string): DeviceState {
    let s = this.states.get(device)
    if (!s) {
      s = { online: false, link: null, rhythm: new Rhythm(), metrics: {}, sentKey: null, sentStatus: null, sentAt: 0, pending: null }
      this.states.set(device, s)
    }
    return s
  }

  /** The device id a JID's local part names (JIDs are case-insensitive, device ids are not). */
  private deviceOf(local: string | null): string | null {
    if (!local) return null
    for (const dev of this.states.keys()) if (dev.toLowerCase() === local) return dev
    for (const dev of this.d.devices()) if (dev.toLowerCase() === local) return dev
    return null
  }

  private blocked(jid: string): boolean {
    return blockedBy(this.cfg.blocked, jid) || blockedBy(this.serverBlocked, jid) || blockedBy(this.store.blocked(), jid)
  }

  private view(device: string): ContactView {
    const s = this.state(device)
    return {
      online: s.online, link: s.link, lastAt: s.rhythm.lastAt, intervalMs: s.rhythm.intervalMs, metrics: s.metrics,
      lateness: s.online ? s.rhythm.lateness(Date.now(), this.cfg.presence.awayFactor, this.cfg.presence.xaFactor) : null,
    }
  }

  private presenceOf(device: string): Presence {
    const v = this.view(device)
    if (!v.online) return { type: 'unavailable', ...(v.lastAt !== null ? { status: `offline · last: ${summary(v.metrics)}` } : {}) }
    const status = summary(v.metrics)
    return { type: 'available', ...(v.lateness ? { show: v.lateness } : {}), ...(status ? { status } : {}) }
  }

  private sendPresence(device: string, to: string, p: Presence): void {
    this.link.send(presence(this.jidOf(device), to, { ...(p.type === 'unavailable' ? { type: 'unavailable' as const } : {}), ...(p.show ? { show: p.show } : {}), ...(p.status ? { status: p.status } : {}) }))
  }

  /** Tells every (unblocked) subscriber the device's presence: at once when type/show changed, throttled for status text. */
  private announce(device: string, now: boolean): void {
    if (this.clientMode) { this.announceSelf(); return }
    const s = this.state(device)
    const p = this.presenceOf(device)
    const key = `${p.type}/${p.show ?? ''}`
    const status = p.status ?? ''
    if (key === s.sentKey && status === s.sentStatus) return
    const wait = key !== s.sentKey || now ? 0 : s.sentAt + STATUS_MIN_INTERVAL_MS - Date.now()
    if (wait > 0) {
      s.pending ??= setTimeout(() => { s.pending = null; this.announce(device, false) }, wait)
      return
    }
    if (s.pending) { clearTimeout(s.pending); s.pending = null }
    if (!this.link.online) return
    s.sentKey = key
    s.sentStatus = status
    s.sentAt = Date.now()
    for (const jid of this.audience(device)) this.sendPresence(device, jid, p)
  }

  /** Client mode: one presence for the gateway account (the server fans it out), status = devices online. */
  private announceSelf(): void {
    const all = [...this.states.keys()]
    const online = all.filter((d) => this.states.get(d)!.online)
    const text = `${online.length} of ${all.length} devices online${online.length ? `: ${online.slice(0, 10).join(', ')}${online.length > 10 ? ' …' : ''}` : ''}`
    const sp = this.selfPresence
    if (text === sp.text || sp.timer) return
    const wait = sp.at + STATUS_MIN_INTERVAL_MS - Date.now()
    if (wait > 0) { sp.timer = setTimeout(() => { sp.timer = null; this.announceSelf() }, wait); return }
    if (!this.link.online) return
    sp.text = text
    sp.at = Date.now()
    this.link.send(el('presence', {}, el('status', {}, text)))
  }

  /** Client mode, after login: initial presence (so subscription requests reach us) and the server's block list. */
  private clientOnline(): void {
    this.selfPresence.text = ''
    this.selfPresence.at = 0
    this.announceSelf()
    this.link.request(el('iq', { type: 'get' }, el('blocklist', { xmlns: NS.blocking })), 10000).then((res) => {
      this.serverBlocked = new Set(blockItems(child(res, 'blocklist', NS.blocking)))
      this.d.log.info({ blocked: this.serverBlocked.size }, 'xmpp: server block list (XEP-0191) loaded')
    }, (err: unknown) => this.d.log.info({ err: (err as Error).message }, 'xmpp: server has no block list (XEP-0191)'))
    this.d.log.info({ jid: this.selfBare, subscriptions: this.store.subscribers('*').length }, 'xmpp presence announced')
  }

  /** After (re)connecting: every subscriber gets the current presence of its devices (the server forgot it). */
  private reannounce(): void {
    for (const s of this.states.values()) s.sentKey = null
    const subs = this.store.allSubscriptions()
    for (const { device, jid } of subs) {
      if (this.blocked(jid) || !allowed(this.cfg, jid, device, 'subscribe')) continue
      this.sendPresence(device, jid, this.presenceOf(device))
    }
    for (const [dev, s] of this.states) { const p = this.presenceOf(dev); s.sentKey = `${p.type}/${p.show ?? ''}`; s.sentStatus = p.status ?? ''; s.sentAt = Date.now() }
    this.d.log.info({ subscriptions: subs.length }, 'xmpp presence announced')
  }

  private onReading(device: string, link: string, metrics: Record<string, MetricValue>): void {
    const s = this.state(device)
    s.rhythm.note(Date.now())
    s.link = link
    Object.assign(s.metrics, metrics)
    this.announce(device, false)
  }

  private onAlert(e: AlertEvent): void {
    const a = e.alert
    if (a.rule === 'device_offline' && !this.cfg.alerts.offline) return
    const body = alertChat(e)
    // Also while the link is down: client mode queues it for the resumed/fresh session, component mode counts it.
    if (a.device !== undefined) {
      for (const jid of this.audience(a.device)) this.link.send(chat(this.jidOf(a.device), jid, body))
      return
    }
    // Gateway-wide (outbox, upstreams): once to each subscriber, from the component (client mode: the account).
    const jids = this.clientMode
      ? this.store.subscribers('*').filter((j) => !this.blocked(j))
      : new Set(this.store.allSubscriptions().filter(({ device, jid }) => allowed(this.cfg, jid, device, 'subscribe') && !this.blocked(jid)).map((x) => x.jid))
    for (const jid of jids) this.link.send(chat(this.clientMode ? this.selfBare : this.domain, jid, body))
  }

  // ---- incoming ------------------------------------------------------------------------------------------------------

  /** Client mode: the server leaves out `from` on its own pushes and `to` on what is addressed to us. */
  private normalise(s: XmlNode): XmlNode {
    if (!this.clientMode || (s.attrs.from && s.attrs.to)) return s
    return { ...s, attrs: { ...s.attrs, from: s.attrs.from ?? this.selfBare, to: s.attrs.to ?? (this.link.jid || this.selfBare) } }
  }

  private onStanza(raw: XmlNode): void {
    const s = this.normalise(raw)
    const x = parseIncoming(s)
    if (x.kind === 'invalid') {
      this.d.log.warn({ reason: x.reason, stanza: s.name, from: s.attrs.from, to: s.attrs.to }, 'xmpp: malformed stanza ignored')
      if (s.attrs.type !== 'error' && s.attrs.from && s.attrs.to && (s.name === 'message' || s.name === 'iq')) {
        this.link.send(errorReply(s.name, s.attrs.id, s.attrs.to, s.attrs.from, 'modify', 'bad-request', x.reason))
      }
      return
    }
    if (x.kind === 'iq-reply' || x.kind === 'iq') return
    const jid = bareJid(x.from)
    if (this.blocked(jid)) {
      this.d.log.info({ from: jid, stanza: x.kind, type: x.type }, 'xmpp: stanza from a blocked JID dropped')
      return
    }
    if (x.kind === 'presence') this.onPresence(x, jid)
    else this.onMessage(x, jid)
  }

  private onPresence(x: Extract<Incoming, { kind: 'presence' }>, jid: string): void {
    if (this.clientMode) { this.onClientPresence(x, jid); return }
    const device = this.deviceOf(x.to.local)
    const from = x.to.local ? `${x.to.local}@${this.domain}` : this.domain
    switch (x.type) {
      case 'subscribe': {
        if (device && allowed(this.cfg, jid, device, 'subscribe')) {
          this.store.subscribe(device, jid)
          this.link.send(presence(from, jid, { type: 'subscribed' }))
          this.sendPresence(device, jid, this.presenceOf(device))
          this.d.log.info({ jid, device }, 'xmpp subscription approved')
        } else {
          this.link.send(presence(from, jid, { type: 'unsubscribed' }))
          this.d.log.info({ jid, device: device ?? x.to.local, reason: device ? 'not in xmpp.allow' : 'unknown device' }, 'xmpp subscription refused')
        }
        return
      }
      case 'unsubscribe':
        if (device && this.store.unsubscribe(device, jid)) this.d.log.info({ jid, device }, 'xmpp subscription removed')
        this.link.send(presence(from, jid, { type: 'unsubscribed' }))
        this.link.send(presence(from, jid, { type: 'unavailable' }))
        return
      case 'probe':
        if (device && this.store.isSubscribed(device, jid) && allowed(this.cfg, jid, device, 'subscribe')) this.sendPresence(device, jid, this.presenceOf(device))
        else this.link.send(presence(from, jid, { type: 'unsubscribed' }))
        return
      default:
        // The user's own presence (available/unavailable), or answers to our subscription state: nothing to do.
        return
    }
  }

  /** Client mode: subscriptions are to the gateway account, approved when the JID may see at least one device. */
  private onClientPresence(x: Extract<Incoming, { kind: 'presence' }>, jid: string): void {
    if (jid === this.selfBare) return // our own other resources
    if (x.type === 'subscribe') {
      const ok = this.d.devices().some((d) => allowed(this.cfg, jid, d, 'subscribe')) || this.cfg.allow.some((r) => !r.devices && !r.groups && r.jids.some((p) => jidMatches(p, jid)))
      if (ok) this.store.subscribe('*', jid)
      this.link.send(presence(undefined, jid, { type: ok ? 'subscribed' : 'unsubscribed' }))
      this.d.log.info({ jid }, ok ? 'xmpp subscription approved' : 'xmpp subscription refused')
    } else if (x.type === 'unsubscribe') {
      if (this.store.unsubscribe('*', jid)) this.d.log.info({ jid }, 'xmpp subscription removed')
      this.link.send(presence(undefined, jid, { type: 'unsubscribed' }))
    }
  }

  private onMessage(x: Extract<Incoming, { kind: 'message' }>, jid: string): void {
    if (x.type === 'error' || x.type === 'groupchat' || x.type === 'headline') return
    if (x.body === null) return // chat states, receipts: not a command
    const replyTo = `${bareJid(x.from)}${x.from.resource ? `/${x.from.resource}` : ''}`
    // Client mode: the server stamps our JID; a `from` of ours is not needed.
    const me = this.clientMode ? undefined : x.to.local ? `${x.to.local}@${this.domain}` : this.domain
    const say = (body: string): void => this.link.send(chat(me, replyTo, body, x.thread))
    const bytes = Buffer.byteLength(x.body)
    if (bytes > this.cfg.maxMessageBytes) {
      this.d.log.warn({ from: jid, to: me, bytes, limit: this.cfg.maxMessageBytes }, 'xmpp: oversized message refused')
      say(`Sorry, that message is too long (${bytes} bytes; the limit is ${this.cfg.maxMessageBytes}).`)
      return
    }
    if (this.clientMode) {
      // "<device> <command ...>", or a gateway command (help, list).
      const m = /^\s*(\S+)\s*([\s\S]*)$/.exec(x.body)
      const device = m ? this.deviceOf(m[1]!.toLowerCase()) : null
      if (!device) {
        const c = parseChat(x.body)
        if (c.kind === 'list') say(this.listReply(jid))
        else if (c.kind === 'help') say(`Address a device first: "<device> <command>", e.g. "sensor-1 status".\n${HELP}`)
        else say(`Sorry, "${x.body.trim().slice(0, 40)}" does not start with one of your devices. Send "list" for them, "help" for the commands.`)
        return
      }
      this.deviceCommand(device, parseChat(m![2]!), jid, say, () => this.link.send(errorReply('message', x.id, me, replyTo, 'auth', 'forbidden', `${jid} may not command ${device}`)))
      return
    }
    const cmd = parseChat(x.body)
    if (!x.to.local) {
      // The component itself: only the directory.
      // `list` to the component also suggests the devices as contacts (XEP-0144, for clients that support it).
      if (cmd.kind === 'list') this.link.send(chat(me, replyTo, this.listReply(jid), x.thread, this.rosterItems(jid)))
      else say(`This is the edgeway gateway "${this.d.gatewayId}". Talk to a device: ${this.listReply(jid)}\nSend "list" here for the device JIDs.`)
      return
    }
    const device = this.deviceOf(x.to.local)
    if (!device) {
      this.link.send(errorReply('message', x.id, me, replyTo, 'cancel', 'item-not-found', `no device "${x.to.local}" on this gateway`))
      return
    }
    this.deviceCommand(device, cmd, jid, say, () => this.link.send(errorReply('message', x.id, me, replyTo, 'auth', 'forbidden', `${jid} may not command ${device}`)))
  }

  private deviceCommand(device: string, cmd: ChatCommand, jid: string, say: (body: string) => void, forbidden: () => void): void {
    if (!allowed(this.cfg, jid, device, 'command')) {
      this.d.log.info({ from: jid, device }, 'xmpp: command from a JID outside the allowlist refused')
      forbidden()
      return
    }
    switch (cmd.kind) {
      case 'help': say(HELP); return
      case 'status': say(statusReply(device, this.view(device), Date.now())); return
      case 'get': say(getReply(device, cmd.metric, this.view(device))); return
      case 'list': say(this.listReply(jid)); return
      case 'unknown': say(unknownReply(cmd)); return
      case 'device': {
        const id = `xmpp-${randomUUID()}`
        this.d.log.info({ id, from: jid, device, command: cmd.name }, 'xmpp command')
        this.d.dispatch({ id, device, name: cmd.name, args: cmd.args, expiresAt: Date.now() + this.cfg.commandTimeoutMs })
          .then((r) => {
            // Blocked while the command ran: the answer is withheld too.
            if (this.blocked(jid)) return
            say(resultReply(r))
          }, (err: unknown) => say(`${cmd.name} failed: ${(err as Error).message}`))
      }
    }
  }

  private rosterItems(jid: string): XmlNode {
    const mine = this.d.devices().filter((dev) => allowed(this.cfg, jid, dev, 'subscribe')).sort()
    return rosterSuggestion(mine.map((dev) => ({ jid: this.jidOf(dev), name: dev, group: `edgeway ${this.d.gatewayId}` })))
  }

  /** XEP-0050: `status` (a note), `command` (a form: name + args, then the device's answer as a note). */
  private async adhoc(local: string, jid: string, p: XmlNode): Promise<IqAnswer> {
    const device = this.deviceOf(local)
    if (!device) return { error: { type: 'cancel', condition: 'item-not-found' } }
    const node = p.attrs.node ?? ''
    const sessionid = p.attrs.sessionid ?? randomUUID()
    const right = node === 'status' ? 'subscribe' : 'command'
    if (!allowed(this.cfg, jid, device, right)) return { error: { type: 'auth', condition: 'forbidden', text: `${jid} may not ${right === 'command' ? 'command' : 'see'} ${device}` } }
    if (p.attrs.action === 'cancel') return { payload: el('command', { xmlns: NS.commands, node, sessionid, status: 'canceled' }) }
    if (node === 'status') return { payload: adhocCompleted(node, sessionid, statusReply(device, this.view(device), Date.now())) }
    if (node !== 'command') return { error: { type: 'cancel', condition: 'item-not-found', text: `no command "${node.slice(0, 40)}"` } }
    const v = formValues(p)
    if (!v.name) return { payload: adhocForm(node, sessionid, `Command for ${device}`, [{ var: 'name', label: 'Command', required: true }, { var: 'args', label: 'Arguments (key=value ..., JSON or text)' }]) }
    const cmd = parseChat(`${v.name} ${v.args ?? ''}`)
    if (cmd.kind !== 'device') return { payload: adhocCompleted(node, sessionid, cmd.kind === 'unknown' ? unknownReply(cmd) : 'use the chat for help, status, get and list', 'error') }
    const id = `xmpp-${randomUUID()}`
    this.d.log.info({ id, from: jid, device, command: cmd.name, via: 'adhoc' }, 'xmpp command')
    const r = await this.d.dispatch({ id, device, name: cmd.name, args: cmd.args, expiresAt: Date.now() + this.cfg.commandTimeoutMs })
    return { payload: adhocCompleted(node, sessionid, resultReply(r), r.ok ? 'info' : 'error') }
  }

  private listReply(jid: string): string {
    const mine = this.d.devices().filter((dev) => allowed(this.cfg, jid, dev, 'subscribe')).sort()
    if (mine.length === 0) return 'no devices you may see'
    return mine.map((dev) => `${this.clientMode ? dev : this.jidOf(dev)} (${this.state(dev).online ? 'online' : 'offline'})`).join('\n')
  }

  private onIq(raw: XmlNode): IqAnswer | Promise<IqAnswer> {
    const x = parseIncoming(this.normalise(raw))
    if (x.kind !== 'iq') return { error: { type: 'modify', condition: 'bad-request', text: x.kind === 'invalid' ? x.reason : 'not a request' } }
    const jid = bareJid(x.from)
    if (this.blocked(jid)) return { error: { type: 'cancel', condition: 'service-unavailable' } }
    const p = x.payload
    if (p?.name === 'ping' && p.attrs.xmlns === NS.ping) return {}
    // Client mode: pushes from our own server (roster changes, XEP-0191 block list changes) are acknowledged.
    if (this.clientMode && x.type === 'set' && (jid === this.selfBare || jid === this.domain)) {
      if (p?.attrs.xmlns === NS.blocking && (p.name === 'block' || p.name === 'unblock')) {
        const items = blockItems(p)
        if (p.name === 'block') for (const j of items) this.serverBlocked.add(j)
        else if (items.length === 0) this.serverBlocked.clear()
        else for (const j of items) this.serverBlocked.delete(j)
        this.d.log.info({ change: p.name, jids: items, blocked: this.serverBlocked.size }, 'xmpp: server block list changed (XEP-0191)')
        return {}
      }
      if (p?.attrs.xmlns === 'jabber:iq:roster') return {}
    }
    if (p?.name === 'query' && p.attrs.xmlns === NS.discoInfo && x.type === 'get') {
      if (!x.to.local) return { payload: discoInfo({ category: 'gateway', type: 'iot', name: `edgeway ${this.d.gatewayId}` }, [NS.discoInfo, NS.ping, NS.rosterx]) }
      const device = this.deviceOf(x.to.local)
      if (!device) return { error: { type: 'cancel', condition: 'item-not-found' } }
      return { payload: discoInfo({ category: 'client', type: 'bot', name: device }, [NS.discoInfo, NS.ping, NS.commands]) }
    }
    if (!this.clientMode && x.to.local && p?.name === 'query' && p.attrs.xmlns === NS.discoItems && p.attrs.node === NS.commands && x.type === 'get') {
      const device = this.deviceOf(x.to.local)
      if (!device) return { error: { type: 'cancel', condition: 'item-not-found' } }
      const cmds = [{ node: 'status', name: 'Status' }, ...(allowed(this.cfg, jid, device, 'command') ? [{ node: 'command', name: 'Send a command' }] : [])]
      return { payload: adhocList(this.jidOf(device), allowed(this.cfg, jid, device, 'subscribe') ? cmds : []) }
    }
    if (!this.clientMode && x.to.local && p?.name === 'command' && p.attrs.xmlns === NS.commands && x.type === 'set') return this.adhoc(x.to.local, jid, p)
    return { error: { type: 'cancel', condition: 'service-unavailable' } }
  }
}
