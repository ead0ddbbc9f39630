// The gateway's HTTP port: /healthz, /metrics and the dashboard (pages, assets, its WebSocket upgrade).
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'

export type Route = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void
export type UpgradeRoute = (req: IncomingMessage, socket: Duplex, head: Buffer) => void

export class HttpServer {
  private server: Server | null = null
  private readonly routes = new Map<string, Route>()
  /** Routes for every path under a prefix ("/ui/"), longest prefix first. */
  private readonly prefixes: [string, Route][] = []
  private readonly upgrades = new Map<string, UpgradeRoute>()
  port = 0

  constructor(private readonly host: string, private readonly wantPort: number, private readonly log: Logger) {}

  /** Exact path, or a prefix when `path` ends with "/*" ("/ui/*" serves "/ui/app.js"). */
  route(path: string, handler: Route): void {
    if (path.endsWith('/*')) {
      this.prefixes.push([path.slice(0, -1), handler])
      this.prefixes.sort((a, b) => b[0].length - a[0].length)
    } else this.routes.set(path, handler)
  }

  /** WebSocket (or other) upgrades on an exact path; other upgrade paths get 404. */
  upgrade(path: string, handler: UpgradeRoute): void { this.upgrades.set(path, handler) }

  async start(): Promise<void> {
    const srv = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0] ?? '/'
      const handler = this.routes.get(path) ?? this.prefixes.find(([p]) => path.startsWith(p))?.[1]
      if (!handler) { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n'); return }
      Promise.resolve(handler(req, res)).catch((err: Error) => {
        this.log.error({ err: err.message, path }, 'http handler failed')
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
        res.end('internal error\n')
      })
    })
    srv.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => socket.destroy())
      const handler = this.upgrades.get((req.url ?? '/').split('?')[0] ?? '/')
      if (!handler) { socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'); return }
      try { handler(req, socket, head) } catch (err) {
        this.log.error({ err: (err as Error).message, path: req.url }, 'http upgrade handler failed')
        socket.destroy()
      }
    })
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`cannot listen for http on ${this.host}:${this.wantPort}: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`)))
      srv.listen(this.wantPort, this.host, () => resolve())
    })
    const a = srv.address()
    this.port = a && typeof a === 'object' ? a.port : this.wantPort
    this.server = srv
  }

  async stop(): Promise<void> {
    const s = this.server
    if (!s) return
    this.server = null
    s.closeAllConnections()
    await new Promise<void>((resolve) => s.close(() => resolve()))
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(body, null, 2) + '\n')
}
