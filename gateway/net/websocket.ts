// The one file that imports `ws`: WebSocket upgrades on an HTTP server, exposed as byte streams or sockets.
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws'
import type { Server as HttpServer, IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'

export type { WebSocket }

export interface WsOptions {
  path: string
  maxPayload: number
  /** Subprotocols accepted (MQTT clients ask for "mqtt" or "mqttv3.1"). */
  protocols?: string[]
}

/** Accepts WebSocket upgrades on `path` and hands each as a binary Duplex stream (for MQTT over WebSocket). */
export function acceptWebSocketStreams(server: HttpServer, opts: WsOptions, onStream: (stream: Duplex, req: IncomingMessage) => void): () => Promise<void> {
  const wss = new WebSocketServer({
    server,
    path: opts.path,
    maxPayload: opts.maxPayload,
    handleProtocols: (offered) => {
      if (!opts.protocols) return offered.values().next().value ?? false
      for (const p of offered) if (opts.protocols.includes(p)) return p
      return false
    },
  })
  // Listen errors are reported by the HTTP server's own listener; ws re-emits them here too.
  wss.on('error', () => undefined)
  wss.on('connection', (ws, req) => {
    const stream = createWebSocketStream(ws)
    // A socket error is the client's problem, not the gateway's: close that stream only.
    stream.on('error', () => stream.destroy())
    onStream(stream, req)
  })
  return () => new Promise((resolve) => {
    for (const c of wss.clients) c.terminate()
    wss.close(() => resolve())
  })
}
