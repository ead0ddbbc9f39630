// The dashboard: pages and assets on the gateway's HTTP port, and one authenticated WebSocket per browser carrying
// live state (devices, readings, outbox, upstreams, refusals), commands, device registration and plug-in channels.
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { HttpServer, Route } from '../http/server.ts'
import { messageSocketServer, refuseUpgrade, type MessageSocket, type MessageSocketServer } from '../net/websocket.ts'
import type { GatewayBus, GatewayEvents } from '../events.ts'
import type { Device } from '../registry/registry.ts'
import type { Command, CommandResult } from '../commands/router.ts'
import type { DashboardConfig } from './config.ts'
import type { AlertView } from '../alerts/engine.ts'
import type { ChannelConnection, ChannelMessage, DashboardChannel } from './channel.ts'
import { Sessions, parseCookies, decideAccess, originAllowed, checkHost, hostPolicy, SESSION_COOKIE, type Access, type HostPolicy } from './access.ts'
import { LoginThrottle } from '../security/login-throttle.ts'
import { LiveQueue, mergeReadings, mergeLists } from './live-queue.ts'
import { History } from './history.ts'
import { assetDirs, assetFile, sendFile, type AssetDirs } from './assets.ts'
import { machineNames, denyAccess, loginRoute, logoutRoute, type LoginRoutes } from './login.ts'

/** What the dashboard shows about the gateway's health: the /healthz figures. */
export interface StatusSnapshot {
  status: string
  reasons: string[]
  outbox: { depth: number; bytes: number; oldestAgeSeconds: number; drops: Record<string, number>; diskFull: boolean; deadLettered: number } | null
  upstreams: { name: string; connected: boolean; since: string; lastError: string | null; lag: number | null }[]
  mqtt: { clients: number; devices: number }
}

export interface DashboardDeps {
  config: DashboardConfig
  http: HttpServer
  bus: GatewayBus
  log: Logger
  gatewayId: string
  version: string
  /** Shown with a new device's credentials. */
  mqttPort: number
  devices(): Device[]
  device(id: string): Device | undefined
  addDevice(id: string): Promise<string>
  dispatch(cmd: Command): Promise<CommandResult>
  status(): Promise<StatusSnapshot>
  /** Active alerts (gateway/alerts/): sent on connect and after every raise or clear. */
  alerts?(): AlertView[]
}

type ReadingEvent = GatewayEvents['reading'][0]

export interface DeviceView { id: string; online: boolean; link: string | null; firmware: string | null; lastSeen: number | null }

// ---- plug-in HTTP routes (the device page, gateway/dashboard/device-api.ts)
/** A plug-in route's handler, called only after the Host, access and (for anything but GET/HEAD) Origin checks passed. */
export type GuardedRoute = (req: IncomingMessage, res: ServerResponse, who: { user: string }) => Promise<void> | void
/** Plug-in routes: `page` answers 401 with a redirect to /login, `api` with a plain 401/403. */
export interface DashboardRoutes { register(route: (path: string, kind: 'page' | 'api', handler: GuardedRoute) => void): void }
// ---- end plug-in HTTP routes

const viewOf = (d: Device): DeviceView => ({ id: d.id, online: d.online, link: d.link, firmware: d.firmwareVersion, lastSeen: d.lastSeen })

/** Buffered bytes above which a browser counts as slow and its live updates coalesce. */
const HIGH_WATER = 64 * 1024
const STATUS_EVERY_MS = 1000
const DEVICE_POLL_MS = 5000
const FLUSH_EVERY_MS = 25
const MAX_MESSAGE = 64 * 1024

class Connection {
  readonly queue: LiveQueue
  private flushTimer: NodeJS.Timeout | null = null
  readonly channels: ChannelConnection[] = []

  constructor(readonly socket: MessageSocket, readonly user: string, readonly sessionToken: string | null, private readonly onOverflow: () => void) {
    this.queue = new LiveQueue(socket, { highWater: HIGH_WATER, maxUnkeyed: 2000 })
  }

  send(msg: object, key?: string, merge?: (a: object, b: object) => object): void {
    if (!this.socket.open) return
    const r = this.queue.push(msg, key, merge)
    if (r === 'overflow') { this.onOverflow(); return }
    if (r !== 'sent' && !this.flushTimer) {
      this.flushTimer = setInterval(() => {
        if (!this.socket.open || this.queue.flush() === 0) { clearInterval(this.flushTimer!); this.flushTimer = null }
      }, FLUSH_EVERY_MS)
    }
  }

  stop(): void {
    if (this.flushTimer) clearInterval(this.flushTimer)
    this.flushTimer = null
    for (const c of this.channels.splice(0)) c.close()
  }
}

export class DashboardServer {
  private readonly sessions: Sessions
  private readonly throttle: LoginThrottle
  /** The names this gateway answers to (DNS-rebinding guard); loopback only until start() lists the machine's. */
  private hosts: HostPolicy
  /** Host names already warned about, so a rebinding page hammering the port does not flood the log. */
  private readonly hostsWarned = new Set<string>()
  private readonly history: History
  private readonly conns = new Set<Connection>()
  private readonly channels: DashboardChannel[] = []
  private readonly routePlugins: DashboardRoutes[] = []
  private readonly refusals: object[] = []
  private wss: MessageSocketServer | null = null
  private timers: NodeJS.Timeout[] = []
  private lastDevices = new Map<string, string>()
  private statusBusy = false
  private dirs: AssetDirs = { publicDir: '', vendorDir: '' }
  private readonly unsubscribe: (() => void)[] = []
  private readonly log: Logger

  constructor(private readonly d: DashboardDeps) {
    this.sessions = new Sessions(d.config.sessionHours * 3600_000)
    this.history = new History(d.config.historyPoints)
    this.throttle = new LoginThrottle({ budget: d.config.loginThrottle.budget, baseLockMs: d.config.loginThrottle.lockSeconds * 1000 })
    this.hosts = hostPolicy({ hostnames: [], addresses: [] }, d.config.allowedOrigins)
    this.log = d.log.child({ component: 'dashboard' })
  }

  get passwordSet(): boolean { return this.d.config.passwordHash !== undefined }

  /** Plug-in features over the dashboard WebSocket (the camera). Browsers that connect afterwards see it in `hello`. */
  addChannel(ch: DashboardChannel): void {
    if (!/^[a-z][a-z0-9-]*$/.test(ch.prefix)) throw new Error(`dashboard channel prefix "${ch.prefix}": lowercase letters, digits and "-"`)
    if (this.channels.some((c) => c.prefix === ch.prefix)) throw new Error(`dashboard channel "${ch.prefix}" is already registered`)
    this.channels.push(ch)
  }

  /** Plug-in HTTP routes (the device page and its actions), behind this server's Host, session and Origin checks. */
  addRoutes(plugin: DashboardRoutes): void { this.routePlugins.push(plugin) }

  /** Registers routes and bus listeners; the HttpServer must not be listening yet. */
  start(): void {
    this.dirs = assetDirs()
    // Listed once: an address the machine gets later is not a dashboard name until a restart (or allowedOrigins).
    this.hosts = hostPolicy(machineNames(), this.d.config.allowedOrigins)
    const h = this.d.http
    const own = (route: Route): Route => (req, res) => (this.hostOk(req, res) ? route(req, res) : undefined)
    h.route('/', own((req, res) => this.page(req, res)))
    h.route('/login', own((req, res) => loginRoute(req, res, this.loginRoutes())))
    h.route('/logout', own((req, res) => logoutRoute(req, res, this.loginRoutes())))
    h.route('/ui/*', own((req, res) => this.asset(req, res)))
    this.wss = messageSocketServer({
      maxPayload: MAX_MESSAGE,
      onError: (err) => this.log.warn({ err: err.message }, 'dashboard socket closed on bad input'),
    })
    h.upgrade('/ws', (req, socket, head) => this.upgrade(req, socket, head))
    for (const p of this.routePlugins) p.register((path, kind, handler) => h.route(path, own((req, res) => this.guarded(req, res, kind, handler))))
    const onReading = (e: ReadingEvent): void => this.onReading(e)
    const onPresence = (e: { device: string }): void => this.sendDevice(e.device)
    const onRefusal = (e: { reason: string; detail: string; device?: string; clientId?: string }): void => this.onRefusal(e)
    this.d.bus.on('reading', onReading)
    this.d.bus.on('deviceOnline', onPresence)
    this.d.bus.on('deviceOffline', onPresence)
    this.d.bus.on('firmware', onPresence)
    this.d.bus.on('refusal', onRefusal)
    this.unsubscribe.push(
      () => this.d.bus.off('reading', onReading), () => this.d.bus.off('deviceOnline', onPresence),
      () => this.d.bus.off('deviceOffline', onPresence), () => this.d.bus.off('firmware', onPresence),
      () => this.d.bus.off('refusal', onRefusal))
    // ---- alerts: the whole active list after each raise/clear (keyed: a slow browser gets only the newest list)
    let alertsDue = false
    const onAlert = (): void => {
      // A storm of transitions in one evaluation is one list sent, not one per transition.
      if (!this.conns.size || alertsDue) return
      alertsDue = true
      setImmediate(() => {
        alertsDue = false
        this.broadcast({ type: 'alerts', active: this.d.alerts?.() ?? [] }, 'alerts')
        void this.sendStatus() // the health pill and reasons follow at once, not at the next status tick
      })
    }
    this.d.bus.on('alertRaised', onAlert)
    this.d.bus.on('alertCleared', onAlert)
    this.unsubscribe.push(() => this.d.bus.off('alertRaised', onAlert), () => this.d.bus.off('alertCleared', onAlert))
    this.timers.push(
      setInterval(() => { if (this.conns.size) { this.closeExpired(); void this.sendStatus() } }, STATUS_EVERY_MS),
      setInterval(() => { if (this.conns.size) this.pollDevices() }, DEVICE_POLL_MS),
    )
    if (!this.passwordSet) {
      this.log.warn('DASHBOARD HAS NO PASSWORD: it answers loopback clients (127.0.0.1, ::1) only. Set one with `edgeway dashboard set-password` to reach it from the network')
    }
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    for (const u of this.unsubscribe.splice(0)) u()
    for (const c of this.conns) c.stop()
    this.conns.clear()
    await this.wss?.close()
    this.wss = null
  }

  /** Figures for tests and the benchmark. */
  get stats(): { connections: number; sentBytes: number; coalesced: number } {
    let sentBytes = 0, coalesced = 0
    for (const c of this.conns) { sentBytes += c.queue.sentBytes; coalesced += c.queue.coalesced }
    return { connections: this.conns.size, sentBytes, coalesced }
  }

  // ------------------------------------------------------------------------------------------------ access

  private access(req: IncomingMessage): Access {
    const token = parseCookies(req.headers.cookie)[SESSION_COOKIE]
    return decideAccess({ passwordSet: this.passwordSet, remoteAddress: req.socket.remoteAddress, session: this.sessions.get(token) })
  }

  private originOk(req: IncomingMessage): boolean {
    return originAllowed(req.headers.origin, req.headers.host, this.hosts)
  }

  /** DNS rebinding: answers (and returns false) unless the request is addressed to one of the gateway's own names. */
  private hostOk(req: IncomingMessage, res: ServerResponse): boolean {
    const h = checkHost(req.headers.host, this.hosts)
    if (h.ok) return true
    this.warnHost(req, h.reason)
    res.writeHead(h.status, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' }).end(h.reason + '\n')
    return false
  }

  private warnHost(req: IncomingMessage, reason: string): void {
    const host = String(req.headers.host ?? '').slice(0, 100)
    if (this.hostsWarned.has(host) || this.hostsWarned.size >= 100) return
    this.hostsWarned.add(host)
    this.log.warn({ from: req.socket.remoteAddress, host, path: (req.url ?? '').slice(0, 100), reason }, 'dashboard request refused: Host is not one of this gateway\'s names')
  }

  /** Plug-in routes: the same session (or loopback-only) access as the page; a state-changing request also needs an allowed Origin. */
  private guarded(req: IncomingMessage, res: ServerResponse, kind: 'page' | 'api', handler: GuardedRoute): Promise<void> | void {
    const a = this.access(req)
    if (!a.ok) { req.resume(); denyAccess(res, a, kind === 'page'); return }
    if (req.method !== 'GET' && req.method !== 'HEAD' && !this.originOk(req)) {
      this.log.warn({ from: req.socket.remoteAddress, origin: req.headers.origin, path: (req.url ?? '').slice(0, 100) }, 'dashboard action refused: foreign Origin')
      req.resume()
      res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }).end('cross-origin request refused\n')
      return
    }
    return handler(req, res, { user: a.user })
  }

  // ------------------------------------------------------------------------------------------------ pages

  private async page(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET' }).end(); return }
    const a = this.access(req)
    if (!a.ok) { denyAccess(res, a, true); return }
    await sendFile(res, join(this.dirs.publicDir, 'index.html'))
  }

  /** The /login and /logout routes' view of this server (login.ts). */
  private loginRoutes(): LoginRoutes {
    return {
      access: (req) => this.access(req), originOk: (req) => this.originOk(req), passwordSet: this.passwordSet,
      loginPage: join(this.dirs.publicDir, 'login.html'),
      noPassword: 'no dashboard password is set: run `edgeway dashboard set-password`',
      login: () => ({ throttle: this.throttle, sessions: this.sessions, passwordHash: this.d.config.passwordHash!, sessionHours: this.d.config.sessionHours, log: this.log, what: 'dashboard' }),
      sessions: this.sessions, sendFile,
      closeSession: (token) => { for (const c of this.conns) if (c.sessionToken === token) c.socket.close(4401, 'logged out') },
    }
  }

  private async asset(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET' }).end(); return }
    // Assets are not secret, but a dashboard without a password is loopback-only in every part.
    const a = this.access(req)
    if (!a.ok && a.status === 403) { denyAccess(res, a, false); return }
    await sendFile(res, assetFile(this.dirs, (req.url ?? '').split('?')[0]!.slice('/ui/'.length)))
  }

  // ------------------------------------------------------------------------------------------------ websocket

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const h = checkHost(req.headers.host, this.hosts)
    if (!h.ok) {
      this.warnHost(req, h.reason)
      const body = h.reason + '\n'
      socket.end(`HTTP/1.1 ${h.status} ${h.status === 400 ? 'Bad Request' : 'Forbidden'}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, () => socket.destroy())
      return
    }
    const a = this.access(req)
    if (!a.ok) {
      this.log.warn({ from: req.socket.remoteAddress, status: a.status }, 'dashboard websocket refused: ' + a.reason)
      refuseUpgrade(socket, a.status, a.status === 401 ? 'Unauthorized' : 'Forbidden')
      return
    }
    // Cross-site WebSocket hijacking: a foreign page could otherwise ride the session cookie.
    if (!this.originOk(req)) {
      this.log.warn({ from: req.socket.remoteAddress, origin: req.headers.origin }, 'dashboard websocket refused: foreign Origin')
      refuseUpgrade(socket, 403, 'Forbidden')
      return
    }
    if (!this.wss) { socket.destroy(); return }
    this.wss.accept(req, socket, head, (ws) => this.connected(ws, a.user, a.session?.token ?? null))
  }

  private connected(ws: MessageSocket, user: string, token: string | null): void {
    const c: Connection = new Connection(ws, user, token, () => {
      this.log.warn({ user }, 'dashboard browser too slow: closing its socket')
      ws.close(1013, 'too slow')
    })
    this.conns.add(c)
    ws.onClose(() => { c.stop(); this.conns.delete(c) })
    ws.onMessage((text) => this.onMessage(c, text))
    const features: Record<string, boolean> = { camera: false }
    for (const ch of this.channels) features[ch.prefix] = true
    c.send({ type: 'hello', user, gateway: this.d.gatewayId, version: this.d.version, features, auth: this.passwordSet ? 'password' : 'loopback', historyPoints: this.d.config.historyPoints })
    const devices = this.devicesSafe()
    for (const v of devices) this.lastDevices.set(v.id, JSON.stringify({ ...v, lastSeen: null }))
    c.send({ type: 'snapshot', devices, latest: this.history.latest(), history: this.history.snapshot(), refusals: this.refusals })
    void this.d.status().then((s) => c.send({ type: 'status', ...s }, 'status'), () => undefined)
    c.send({ type: 'alerts', active: this.d.alerts?.() ?? [] }, 'alerts')
    for (const ch of this.channels) {
      try {
        c.channels.push(ch.open({ user, send: (msg) => c.send(msg) }))
      } catch (err) { this.log.error({ err: (err as Error).message, channel: ch.prefix }, 'dashboard channel failed to open') }
    }
  }

  private onMessage(c: Connection, text: string): void {
    // The session may have ended (logout, expiry) while the socket stayed open.
    if (c.sessionToken !== null && !this.sessions.get(c.sessionToken)) { c.socket.close(4401, 'session expired'); return }
    let msg: unknown
    try { msg = JSON.parse(text) } catch { msg = undefined }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg) || typeof (msg as { type?: unknown }).type !== 'string') {
      this.log.warn({ user: c.user, bytes: text.length }, 'dashboard message refused: not a JSON object with a "type"')
      c.send({ type: 'error', error: 'message refused: expected a JSON object with a string "type"' })
      return
    }
    const m = msg as ChannelMessage
    const ref = typeof m.ref === 'string' || typeof m.ref === 'number' ? m.ref : null
    const dot = m.type.indexOf('.')
    if (dot > 0) {
      const idx = this.channels.findIndex((ch) => ch.prefix === m.type.slice(0, dot))
      const conn = idx >= 0 ? c.channels[idx] : undefined
      if (conn) {
        try { conn.receive(m) } catch (err) { this.log.error({ err: (err as Error).message, type: m.type }, 'dashboard channel failed on a message') }
        return
      }
    }
    switch (m.type) {
      case 'command': void this.command(c, m, ref); return
      case 'addDevice': void this.addDevice(c, m, ref); return
      default:
        this.log.warn({ user: c.user, type: m.type.slice(0, 64) }, 'dashboard message refused: unknown type')
        c.send({ type: 'error', ref, error: `unknown message type "${m.type.slice(0, 64)}"` })
    }
  }

  private async command(c: Connection, m: ChannelMessage, ref: string | number | null): Promise<void> {
    if (typeof m.device !== 'string' || typeof m.name !== 'string') {
      c.send({ type: 'commandResult', ref, result: { ok: false, code: 'bad_request', error: 'a command needs "device" and "name" strings' } })
      return
    }
    const id = `dash-${randomBytes(8).toString('hex')}`
    this.log.info({ user: c.user, device: m.device, command: m.name, id }, 'dashboard command')
    const result = await this.d.dispatch({ id, device: m.device, name: m.name, args: m.args ?? null })
    c.send({ type: 'commandResult', ref, result })
  }

  private async addDevice(c: Connection, m: ChannelMessage, ref: string | number | null): Promise<void> {
    if (typeof m.id !== 'string') { c.send({ type: 'error', ref, error: 'addDevice needs an "id" string' }); return }
    try {
      const secret = await this.d.addDevice(m.id)
      this.log.info({ user: c.user, device: m.id }, 'dashboard added a device')
      c.send({ type: 'deviceAdded', ref, device: m.id, secret, mqttPort: this.d.mqttPort })
      this.sendDevice(m.id)
    } catch (err) {
      c.send({ type: 'error', ref, error: (err as Error).message })
    }
  }

  // ------------------------------------------------------------------------------------------------ live state

  private broadcast(msg: object, key?: string, merge?: (a: object, b: object) => object): void {
    for (const c of this.conns) c.send(msg, key, merge)
  }

  private onReading(r: ReadingEvent): void {
    this.history.add(r.device, r.ts, r.metrics)
    if (this.conns.size) this.broadcast({ type: 'reading', device: r.device, link: r.link, ts: r.ts, at: Date.now(), metrics: r.metrics }, `r:${r.device}`, mergeReadings)
  }

  private onRefusal(e: { reason: string; detail: string; device?: string; clientId?: string }): void {
    const item = { at: Date.now(), ...e }
    this.refusals.push(item)
    if (this.refusals.length > 50) this.refusals.splice(0, this.refusals.length - 50)
    this.broadcast({ type: 'refusals', items: [item] }, 'refusals', mergeLists('items', 50))
  }

  private devicesSafe(): DeviceView[] {
    try { return this.d.devices().map(viewOf) } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'dashboard: device list failed')
      return []
    }
  }

  private sendDevice(id: string): void {
    let d: Device | undefined
    try { d = this.d.device(id) } catch { return }
    if (!d) return
    const v = viewOf(d)
    this.lastDevices.set(id, JSON.stringify({ ...v, lastSeen: null }))
    this.broadcast({ type: 'device', device: v }, `d:${id}`)
  }

  /** Registry edits by the CLI (another process) and serial HELLOs have no event: compare with what was sent (last-seen ticks excluded). */
  private pollDevices(): void {
    const now = new Map<string, string>()
    for (const v of this.devicesSafe()) {
      const k = JSON.stringify({ ...v, lastSeen: null })
      now.set(v.id, k)
      if (this.lastDevices.get(v.id) !== k) this.broadcast({ type: 'device', device: v }, `d:${v.id}`)
    }
    for (const id of this.lastDevices.keys()) if (!now.has(id)) this.broadcast({ type: 'deviceRemoved', device: id }, `d:${id}`)
    this.lastDevices = now
  }

  /** A session that expired ends its sockets too, not only its next message. */
  private closeExpired(): void {
    for (const c of this.conns) if (c.sessionToken !== null && !this.sessions.get(c.sessionToken)) c.socket.close(4401, 'session expired')
  }

  private async sendStatus(): Promise<void> {
    // A slow status source must not pile up calls.
    if (this.statusBusy) return
    this.statusBusy = true
    try {
      const s = await this.d.status()
      this.broadcast({ type: 'status', at: Date.now(), ...s }, 'status')
    } catch (err) { this.log.warn({ err: (err as Error).message }, 'dashboard: status failed') } finally { this.statusBusy = false }
  }
}
