// A WebSocket upgrade attempt without a WebSocket library: resolves with the HTTP status the server answered
// (101 when it accepted the upgrade), so tests can check who is refused.
import { request } from 'node:http'
import { randomBytes } from 'node:crypto'

export function tryUpgrade(url: string, headers: Record<string, string> = {}, localAddress?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      ...(localAddress ? { localAddress } : {}),
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'), ...headers },
    })
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode ?? 0) })
    req.on('response', (res) => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('error', reject)
    req.end()
  })
}
