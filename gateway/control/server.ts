// The gateway's control socket: CLI commands that need the running process (flash, OTA, status) call it here.
// A unix socket in the data dir, mode 0600: whoever may read the data dir may control the gateway, nobody else.
import { createServer, createConnection, type Server, type Socket } from 'node:net'
import { chmodSync, unlinkSync, existsSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import type { Logger } from 'pino'
import { LineSplitter, type ControlRequest, type ControlResponse } from './protocol.ts'

export type ControlHandler = (params: unknown, progress: (data: unknown) => void) => Promise<unknown>

export class ControlServer {
  private server: Server | null = null
  private readonly handlers = new Map<string, ControlHandler>()
  private readonly sockets = new Set<Socket>()

  constructor(readonly path: string, private readonly log: Logger) {}

  handle(method: string, handler: ControlHandler): void {
    if (this.handlers.has(method)) throw new Error(`control method ${method} registered twice`)
    this.handlers.set(method, handler)
  }

  /** Fails if another live gateway already owns this socket (two gateways on one data dir would corrupt nothing, but confuse everything). */
  async start(): Promise<void> {
    // sun_path is 108 bytes on Linux: fail with the reason, not with a bare EINVAL.
    if (Buffer.byteLength(this.path) > 107) throw new Error(`control socket path ${this.path} is too long for a unix socket (over 107 bytes): choose a shorter gateway.dataDir`)
    mkdirSync(dirname(this.path), { recursive: true })
    if (existsSync(this.path)) {
      if (await isAlive(this.path)) throw new Error(`another edgeway is running with this data dir (its control socket ${this.path} answers)`)
      unlinkSync(this.path) // left behind by a crash
    }
    const server = createServer((s) => this.serve(s))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.path, () => { server.off('error', reject); resolve() })
    })
    chmodSync(this.path, 0o600)
    server.on('error', (err) => this.log.error({ err: err.message }, 'control socket error'))
    this.server = server
  }

  async stop(): Promise<void> {
    const s = this.server
    this.server = null
    if (!s) return
    for (const c of this.sockets) c.destroy()
    await new Promise<void>((resolve) => s.close(() => resolve()))
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket)
    socket.setEncoding('utf8')
    const lines = new LineSplitter()
    const reply = (r: ControlResponse): void => { if (!socket.destroyed) socket.write(JSON.stringify(r) + '\n') }
    socket.on('data', (chunk: string) => {
      let msgs: string[]
      try { msgs = lines.push(chunk) } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'control socket: request refused')
        socket.destroy()
        return
      }
      for (const line of msgs) void this.dispatch(line, reply)
    })
    socket.on('error', () => undefined)
    socket.on('close', () => this.sockets.delete(socket))
  }

  private async dispatch(line: string, reply: (r: ControlResponse) => void): Promise<void> {
    let req: ControlRequest
    try {
      req = JSON.parse(line) as ControlRequest
      if (typeof req.id !== 'number' || typeof req.method !== 'string') throw new Error('a request needs a numeric "id" and a string "method"')
    } catch (err) {
      reply({ id: -1, error: `bad control request: ${(err as Error).message}` })
      return
    }
    const h = this.handlers.get(req.method)
    if (!h) {
      reply({ id: req.id, error: `unknown control method "${req.method}" (known: ${[...this.handlers.keys()].sort().join(', ')})` })
      return
    }
    this.log.info({ method: req.method }, 'control request')
    try {
      const result = await h(req.params, (progress) => reply({ id: req.id, progress }))
      reply({ id: req.id, result: result ?? null })
    } catch (err) {
      reply({ id: req.id, error: (err as Error).message })
    }
  }
}

function isAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path)
    c.once('connect', () => { c.destroy(); resolve(true) })
    c.once('error', () => resolve(false))
  })
}
