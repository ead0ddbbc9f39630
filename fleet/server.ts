// The fleet dashboard: its page and WebSocket on the fleet's HTTP port, behind the gateway dashboard's own access
// code (gateway/dashboard/access.ts sessions, Host and Origin checks; gateway/security/login-throttle.ts; the scrypt
// hash of gateway/registry/secrets.ts) and with its look (the gateway's login page and stylesheet are served as they
// are). Live state goes to each browser through the dashboard's LiveQueue: one keyed update per changed gateway, so a
// slow browser gets the newest state of each gateway rather than a growing queue.
import { join, dirname } from 'node:path'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { HttpServer, Route } from '../gateway/http/server.ts'
import { messageSocketServer, refuseUpgrade, type MessageSocket, type MessageSocketServer } from '../gateway/net/websocket.ts'
import { Sessions, parseCookies, decideAccess, originAllowed, checkHost, hostPolicy, SESSION_COOKIE, type Access, type HostPolicy } from '../gateway/dashboard/access.ts'
import { LoginThrottle } from '../gateway/security/login-throttle.ts'
import { assetDirs, assetFile, sendFile, type AssetDirs } from '../gateway/dashboard/assets.ts'
import { LiveQueue } from '../gateway/dashboard/live-queue.ts'
import { machineNames, denyAccess, loginRoute, logoutRoute, type LoginRoutes } from '../gateway/dashboard/login.ts'
import type { FleetConfig } from './config.ts'
import type { DeviceRecord, GatewayView, Transition } from './model.ts'
import type { FleetCommandRequest, FleetCommandResult } from './commands.ts'

export interface FleetEvent extends Transition { id: number }

/** What the server shows and does; fleet/main.ts wires it to the model, the store and the AMQP side. */
export interface FleetSource {
  views(now: number): GatewayView[]
  devices(gateway: string): DeviceRecord[] | undefined
  events(): FleetEvent[]
  counters(): Record<string, unknown>
  brokerConnected(): boolean
  command(req: FleetCommandRequest, user: string): Promise<FleetCommandResult>
}

const HIGH_WATER = 256 * 1024
const MAX_MESSAGE = 32 * 1024
const TICK_MS = 1000

class Browser {
  readonly queue: LiveQueue
  private timer: NodeJS.Timeout | null = null
  constructor(readonly socket: MessageSocket, readonly user: string, readonly token: string | null, private readonly overflow: () => void) {
    this.queue = new LiveQueue(socket, { highWater: HIGH_WATER, maxUnkeyed: 2000 })
  }
  send(msg: object, key?: string): void {
    if (!this.socket.open) return
    const r = this.queue.push(msg, key)
    if (r === 'overflow') { this.overflow(); return }
    if (r !== 'sent' && !this.timer) {
      this.timer = setInterval(() => { if (!this.socket.open || this.queue.flush() === 0) { clearInterval(this.timer!); this.timer = null } }, 25)
    }
  }
  stop(): void { if (this.timer) clearInterval(this.timer); this.timer = null }
}

/** The page's own files: fleet/public under the package root (found by walking up to package.json, as from dist/). */
function fleetPublicDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5 && !existsSync(join(dir, 'package.json')); i++) dir = dirname(dir)
  if (!existsSync(join(dir, 'package.json'))) throw new Error('fleet: package.json not found above ' + fileURLToPath(import.meta.url))
  return join(dir, 'fleet', 'public')
}

export class FleetServer {
  private readonly sessions: Sessions
  private readonly throttle: LoginThrottle
  private hosts: HostPolicy
  private readonly browsers = new Set<Browser>()
  private wss: MessageSocketServer | null = null
  private timer: NodeJS.Timeout | null = null
  private gatewayDirs: AssetDirs = { publicDir: '', vendorDir: '' }
  private fleetDirs: AssetDirs = { publicDir: '', vendorDir: '' }
  /** What each browser was last sent per gateway (ages excluded: the page counts them itself). */
  private sent = new Map<string, string>()
  private lastEvent = 0
  private readonly log: Logger

  constructor(private readonly cfg: FleetConfig, private readonly http: HttpServer, private readonly src: FleetSource, log: Logger) {
    const d = cfg.dashboard
    this.sessions = new Sessions(d.sessionHours * 3600_000)
    this.throttle = new LoginThrottle({ budget: d.loginThrottle.budget, baseLockMs: d.loginThrottle.lockSeconds * 1000 })
    this.hosts = hostPolicy({ hostnames: [], addresses: [] }, d.allowedOrigins)
    this.log = log.child({ component: 'fleet-dashboard' })
  }

  get passwordSet(): boolean { return this.cfg.dashboard.passwordHash !== undefined }

  /** Registers routes; the HttpServer must not be listening yet. */
  start(): void {
    this.gatewayDirs = assetDirs()
    this.fleetDirs = { publicDir: fleetPublicDir(), vendorDir: this.gatewayDirs.vendorDir }
    this.hosts = hostPolicy(machineNames(), this.cfg.dashboard.allowedOrigins)
    const own = (route: Route): Route => (req, res) => (this.hostOk(req, res) ? route(req, res) : undefined)
    const h = this.http
    h.route('/', own((req, res) => this.page(req, res)))
    h.route('/login', own((req, res) => loginRoute(req, res, this.loginRoutes())))
    h.route('/logout', own((req, res) => logoutRoute(req, res, this.loginRoutes())))
    h.route('/ui/*', own((req, res) => this.asset(req, res, this.gatewayDirs, '/ui/')))
    h.route('/fleet-ui/*', own((req, res) => this.asset(req, res, this.fleetDirs, '/fleet-ui/')))
    this.wss = messageSocketServer({ maxPayload: MAX_MESSAGE, onError: (err) => this.log.warn({ err: err.message }, 'fleet socket closed on bad input') })
    h.upgrade('/ws', (req, socket, head) => this.upgrade(req, socket, head))
    this.timer = setInterval(() => this.tick(), TICK_MS)
    if (!this.passwordSet) this.log.warn('FLEET DASHBOARD HAS NO PASSWORD: it answers loopback clients only. Set fleet.dashboard.passwordHash (`edgeway dashboard set-password --print` makes one)')
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    for (const b of this.browsers) b.stop()
    this.browsers.clear()
    await this.wss?.close()
    this.wss = null
  }

  /** Sends what changed since the last tick (and at once after a message, when main calls it). */
  tick(): void {
    const now = Date.now()
    for (const b of this.browsers) if (b.token !== null && !this.sessions.get(b.token)) b.socket.close(4401, 'session expired')
    if (!this.browsers.size) { this.sent.clear(); return }
    const next = new Map<string, string>()
    for (const v of this.src.views(now)) {
      const k = JSON.stringify({ ...v, ageSeconds: 0 })
      next.set(v.id, k)
      if (this.sent.get(v.id) !== k) this.broadcast({ type: 'gateway', now, gateway: v }, `g:${v.id}`)
    }
    this.sent = next
    const fresh = this.src.events().filter((e) => e.id > this.lastEvent)
    if (fresh.length) { this.lastEvent = fresh[fresh.length - 1]!.id; this.broadcast({ type: 'events', items: fresh }) }
    this.broadcast({ type: 'summary', now, broker: this.src.brokerConnected(), counters: this.src.counters() }, 'summary')
  }

  private broadcast(msg: object, key?: string): void { for (const b of this.browsers) b.send(msg, key) }

  // ---------------------------------------------------------------------------------------------- access

  private access(req: IncomingMessage): Access {
    const token = parseCookies(req.headers.cookie)[SESSION_COOKIE]
    return decideAccess({ passwordSet: this.passwordSet, remoteAddress: req.socket.remoteAddress, session: this.sessions.get(token) })
  }

  private originOk(req: IncomingMessage): boolean { return originAllowed(req.headers.origin, req.headers.host, this.hosts) }

  private hostOk(req: IncomingMessage, res: ServerResponse): boolean {
    const h = checkHost(req.headers.host, this.hosts)
    if (h.ok) return true
    res.writeHead(h.status, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' }).end(h.reason + '\n')
    return false
  }

  private async page(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET' }).end(); return }
    const a = this.access(req)
    if (!a.ok) { denyAccess(res, a, true); return }
    await sendFile(res, join(this.fleetDirs.publicDir, 'fleet.html'))
  }

  /** The /login and /logout routes' view of this server (gateway/dashboard/login.ts). */
  private loginRoutes(): LoginRoutes {
    return {
      access: (req) => this.access(req), originOk: (req) => this.originOk(req), passwordSet: this.passwordSet,
      // The gateway's own login page: same form, same look.
      loginPage: join(this.gatewayDirs.publicDir, 'login.html'),
      noPassword: 'no fleet dashboard password is set (fleet.dashboard.passwordHash)',
      login: () => ({ throttle: this.throttle, sessions: this.sessions, passwordHash: this.cfg.dashboard.passwordHash!, sessionHours: this.cfg.dashboard.sessionHours, log: this.log, what: 'fleet' }),
      sessions: this.sessions, sendFile,
      closeSession: (token) => { for (const b of this.browsers) if (b.token === token) b.socket.close(4401, 'logged out') },
    }
  }

  private async asset(req: IncomingMessage, res: ServerResponse, dirs: AssetDirs, prefix: string): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET' }).end(); return }
    const a = this.access(req)
    if (!a.ok && a.status === 403) { denyAccess(res, a, false); return }
    await sendFile(res, assetFile(dirs, (req.url ?? '').split('?')[0]!.slice(prefix.length)))
  }

  // ---------------------------------------------------------------------------------------------- websocket

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const h = checkHost(req.headers.host, this.hosts)
    if (!h.ok) { refuseUpgrade(socket, h.status, h.status === 400 ? 'Bad Request' : 'Forbidden'); return }
    const a = this.access(req)
    if (!a.ok) { refuseUpgrade(socket, a.status, a.status === 401 ? 'Unauthorized' : 'Forbidden'); return }
    // Cross-site WebSocket hijacking: a foreign page could otherwise ride the session cookie.
    if (!this.originOk(req)) {
      this.log.warn({ from: req.socket.remoteAddress, origin: req.headers.origin }, 'fleet websocket refused: foreign Origin')
      refuseUpgrade(socket, 403, 'Forbidden')
      return
    }
    if (!this.wss) { socket.destroy(); return }
    this.wss.accept(req, socket, head, (ws) => this.connected(ws, a.user, a.session?.token ?? null))
  }

  private connected(ws: MessageSocket, user: string, token: string | null): void {
    const b = new Browser(ws, user, token, () => { this.log.warn({ user }, 'fleet browser too slow: closing its socket'); ws.close(1013, 'too slow') })
    this.browsers.add(b)
    ws.onClose(() => { b.stop(); this.browsers.delete(b) })
    ws.onMessage((text) => this.onMessage(b, text))
    const now = Date.now()
    b.send({ type: 'hello', user, auth: this.passwordSet ? 'password' : 'loopback', now })
    // The whole fleet in one message: the first render does not wait for a tick.
    b.send({ type: 'fleet', now, broker: this.src.brokerConnected(), counters: this.src.counters(), gateways: this.src.views(now), events: this.src.events().slice(-50) })
  }

  private onMessage(b: Browser, text: string): void {
    if (b.token !== null && !this.sessions.get(b.token)) { b.socket.close(4401, 'session expired'); return }
    let m: Record<string, unknown> | null = null
    try { const v = JSON.parse(text) as unknown; if (v && typeof v === 'object' && !Array.isArray(v)) m = v as Record<string, unknown> } catch { m = null }
    if (!m || typeof m.type !== 'string') { b.send({ type: 'error', error: 'expected a JSON object with a string "type"' }); return }
    const ref = typeof m.ref === 'string' || typeof m.ref === 'number' ? m.ref : null
    if (m.type === 'devices') {
      const gw = typeof m.gateway === 'string' ? m.gateway : ''
      b.send({ type: 'devices', ref, gateway: gw, devices: this.src.devices(gw) ?? [] })
      return
    }
    if (m.type === 'command') {
      const req = { gateway: m.gateway as string, device: m.device as string, name: m.name as string, args: m.args ?? null }
      void this.src.command(req, b.user).then((result) => b.send({ type: 'commandResult', ref, gateway: req.gateway, device: req.device, name: req.name, result }))
      return
    }
    b.send({ type: 'error', ref, error: `unknown message type "${m.type.slice(0, 64)}"` })
  }
}
