// CLI side of the control socket: one call per connection, progress lines forwarded as they come.
import { createConnection } from 'node:net'
import { join, resolve } from 'node:path'
import { LineSplitter, SOCKET_NAME, type ControlResponse } from './protocol.ts'

export class GatewayNotRunning extends Error {}

export function controlSocketPath(dataDir: string): string {
  return join(resolve(dataDir), SOCKET_NAME)
}

export function controlCall(dataDir: string, method: string, params?: unknown, onProgress?: (data: unknown) => void): Promise<unknown> {
  const path = controlSocketPath(dataDir)
  return new Promise((resolvePromise, reject) => {
    const c = createConnection(path)
    const lines = new LineSplitter()
    let done = false
    const finish = (err: Error | null, value?: unknown): void => {
      if (done) return
      done = true
      c.destroy()
      if (err) reject(err)
      else resolvePromise(value)
    }
    c.setEncoding('utf8')
    c.once('connect', () => c.write(JSON.stringify({ id: 1, method, params }) + '\n'))
    c.on('data', (chunk: string) => {
      let msgs: string[]
      try { msgs = lines.push(chunk) } catch (err) { finish(err as Error); return }
      for (const line of msgs) {
        const r = JSON.parse(line) as ControlResponse
        if ('progress' in r) onProgress?.(r.progress)
        else if ('error' in r) finish(new Error(r.error))
        else finish(null, r.result)
      }
    })
    c.once('error', (err: NodeJS.ErrnoException) => {
      finish(err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
        ? new GatewayNotRunning(`the gateway is not running with data dir ${resolve(dataDir)} (no answer on ${path})`)
        : err)
    })
    c.once('close', () => finish(new Error(`the gateway closed the control connection before answering ${method}`)))
  })
}
