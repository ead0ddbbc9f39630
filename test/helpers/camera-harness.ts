// A stand-in for the dashboard around the camera channel: an HTTP page that mounts the real camera panel
// (gateway/dashboard/public/camera.js) and a WebSocket carrying the same "camera.*" messages to a CameraService.
// Used by the camera test and the camera benchmark (in a child process, so its CPU is measured on its own).
import { createServer } from 'node:http'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { CameraService } from '../../gateway/camera/service.ts'
import type { CameraConfig } from '../../gateway/camera/config.ts'
import { acceptWebSocketStreams } from '../../gateway/net/websocket.ts'
import type { ChannelMessage } from '../../gateway/dashboard/channel.ts'
import { ROOT } from './gateway.ts'

// The page's side of the seam. The stream API sends binary frames, so messages travel as JSON lines.
const PAGE = `<!doctype html><meta charset=utf-8><title>camera</title><body style="margin:0;background:#222">
<div id=cam style="width:640px"></div>
<script type=module>
import { mountCamera } from '/camera.js'
const ws = new WebSocket('ws://' + location.host + '/ws')
ws.binaryType = 'arraybuffer'
const listeners = []
const queue = []
ws.onopen = () => { for (const m of queue.splice(0)) ws.send(m) }
ws.onmessage = (e) => {
  for (const line of new TextDecoder().decode(e.data).split('\\n')) if (line) for (const l of listeners) l(JSON.parse(line))
}
window.cam = mountCamera(document.getElementById('cam'), {
  send: (m) => { const t = JSON.stringify(m) + '\\n'; ws.readyState === 1 ? ws.send(t) : queue.push(t) },
  onMessage: (cb) => listeners.push(cb),
})
</script>`

export interface CameraHarness { url: string; camera: CameraService; stop(): Promise<void> }

export async function startCameraHarness(config: CameraConfig, log: Logger, port: number): Promise<CameraHarness> {
  const camera = new CameraService(config, log)
  const server = createServer((req, res) => {
    if (req.url === '/camera.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(join(ROOT, 'gateway/dashboard/public/camera.js')))
    else res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE)
  })
  const closeWs = acceptWebSocketStreams(server, { path: '/ws', maxPayload: 64 * 1024 }, (stream) => {
    const conn = camera.open({ user: 'test', send: (msg) => { stream.write(JSON.stringify(msg) + '\n') } })
    let buf = ''
    stream.on('data', (d: Buffer) => {
      buf += d.toString()
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        conn.receive(JSON.parse(line) as ChannelMessage)
      }
    })
    stream.on('close', () => conn.close())
  })
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r))
  await camera.start()
  return {
    url: `http://127.0.0.1:${port}/`,
    camera,
    async stop() {
      await camera.stop()
      await closeWs()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}
