// The gateway's HTTP port: /healthz and /metrics (the dashboard mounts here later).
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Logger } from 'pino'

export type Route = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void

export class HttpServer {
  private server: Server | null = null
  private readonly routes = new Map<string, Route>()
  port = 0

  constructor(private readonly host: string, private readonly wantPort: number, private readonly log: Logger) {}

  route(path: string, handler: Route): void { this.routes.set(path, handler) }

  async start(): Promise<void> {
    const srv = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0] ?? '/'
      const handler = this.routes.get(path)
      if (!handler) { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n'); return }
      Promise.resolve(handler(req, res)).catch((err: Error) => {
        this.log.error({ err: err.message, path }, 'http handler failed')
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
        res.end('internal error\n')
      })
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
