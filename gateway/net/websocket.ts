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

/** A text-message WebSocket without the `ws` types: what the dashboard needs to talk to a browser. */
export interface MessageSocket {
  send(text: string): void
  /** Bytes queued in user space and not yet handed to the kernel: the backpressure signal. */
  readonly bufferedAmount: number
  readonly open: boolean
  close(code?: number, reason?: string): void
  onMessage(listener: (text: string) => void): void
  onClose(listener: (code: number) => void): void
}

export interface MessageSocketServer {
  /** Completes an upgrade the caller already authorised; `onSocket` gets the socket once the handshake is done. */
  accept(req: IncomingMessage, socket: Duplex, head: Buffer, onSocket: (s: MessageSocket) => void): void
  close(): Promise<void>
}

export function messageSocketServer(opts: { maxPayload: number; onError?: (err: Error) => void }): MessageSocketServer {
  const wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxPayload, perMessageDeflate: false })
  wss.on('error', () => undefined)
  return {
    accept(req, socket, head, onSocket) {
      wss.handleUpgrade(req, socket, head, (ws) => {
        // A socket error (oversized frame, bad UTF-8) closes that socket only.
        ws.on('error', (err) => { opts.onError?.(err); ws.terminate() })
        onSocket({
          send: (text) => { if (ws.readyState === ws.OPEN) ws.send(text) },
          get bufferedAmount() { return ws.bufferedAmount },
          get open() { return ws.readyState === ws.OPEN },
          close: (code, reason) => ws.close(code, reason),
          onMessage: (l) => ws.on('message', (data, isBinary) => { if (!isBinary) l(data.toString()) }),
          onClose: (l) => ws.on('close', (code) => l(code)),
        })
      })
    },
    close: () => new Promise((resolve) => {
      for (const c of wss.clients) c.terminate()
      wss.close(() => resolve())
    }),
  }
}

/** Answers an upgrade request with an HTTP error instead of a WebSocket (401, 403, ...). */
export function refuseUpgrade(socket: Duplex, status: number, text: string): void {
  const body = text + '\n'
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}
