// The camera end to end: ffmpeg (started and supervised by the camera service as its configured command) -> RTP ->
// WebRTC -> two Chromium viewers decoding frames; a third viewer refused; the source killed -> the panel shows it
// dead, the supervisor restarts it and the same viewers decode again.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import type { Browser, Page } from 'playwright-core'
import { CameraService } from '../gateway/camera/service.ts'
import { cameraSchema } from '../gateway/camera/config.ts'
import { acceptWebSocketStreams } from '../gateway/net/websocket.ts'
import type { ChannelMessage } from '../gateway/dashboard/channel.ts'
import { freePort, waitFor } from './helpers/net.ts'
import { ROOT } from './helpers/gateway.ts'
import { launchBrowser, artifact } from './helpers/browser.ts'
import { ffmpegSource, requireCameraPeers, videoState } from './helpers/camera.ts'

// The page's side of the seam: the dashboard WebSocket carries JSON lines here (the stream API sends binary frames).
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

test('camera: ffmpeg -> gateway -> two Chromium viewers; source killed -> dead, restarted, decoding again', async (t) => {
  requireCameraPeers()
  const logs: { level: number; msg: string }[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => { logs.push(JSON.parse(s) as { level: number; msg: string }) } })
  const config = cameraSchema.parse({
    enabled: true, command: ffmpegSource(), rtpPort: await freePort(), bindAddress: '127.0.0.1', maxViewers: 2,
    stallMs: 3000, restartMinMs: 2500, restartMaxMs: 4000,
  })
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
  const httpPort = await freePort()
  await new Promise<void>((r) => server.listen(httpPort, '127.0.0.1', r))
  let browser: Browser | null = null
  t.after(async () => {
    await browser?.close()
    await camera.stop()
    await closeWs()
    server.close()
  })
  await camera.start()
  browser = await launchBrowser()
  const open = async (): Promise<Page> => {
    const page = await browser!.newPage({ viewport: { width: 680, height: 460 } })
    page.on('pageerror', (e) => logs.push({ level: 50, msg: `page error: ${e.message}` }))
    await page.goto(`http://127.0.0.1:${httpPort}/`)
    return page
  }
  const [a, b] = [await open(), await open()]

  // Both decode, and keep decoding.
  for (const p of [a, b]) {
    const s0 = await waitFor('frames decoded', async () => { const s = await videoState(p); return s.framesDecoded > 5 && s.playing && s })
    assert.equal(s0.width, 640)
    assert.equal(s0.height, 360)
    await new Promise((r) => setTimeout(r, 1000))
    const s1 = await videoState(p)
    assert.ok(s1.framesDecoded >= s0.framesDecoded + 15, `frames keep coming: ${s0.framesDecoded} -> ${s1.framesDecoded} in 1 s`)
    assert.equal(s1.state, 'live')
  }
  await waitFor('2 viewers in status', () => camera.status().viewers === 2)
  assert.ok(camera.status().bitrate > 50_000, `bitrate ${camera.status().bitrate}`)
  await waitFor('panel shows 2 viewers', async () => (await videoState(a)).figures.startsWith('2 viewers'))
  await a.screenshot({ path: artifact('camera-live.png') })

  // A third viewer is refused (maxViewers 2), with a clear message in its panel.
  const c = await open()
  const refused = await waitFor('refusal shown', async () => { const s = await videoState(c); return /too many viewers/.test(s.overlay) && s })
  assert.equal(refused.framesDecoded, 0)
  await c.close()

  // The source dies: the panel says so, the service keeps serving, the supervisor restarts it.
  const pid = camera.sourcePid
  assert.ok(pid)
  process.kill(pid, 'SIGKILL')
  const dead = await waitFor('panel shows the source dead', async () => { const s = await videoState(a); return s.state === 'dead' && s }, 5000)
  assert.match(dead.overlay, /source is down: the camera source exited \(signal SIGKILL\)/)
  assert.equal(camera.status().state, 'dead')
  await a.screenshot({ path: artifact('camera-dead.png') })
  const before = (await videoState(b)).framesDecoded
  await waitFor('source restarted and live', () => camera.status().state === 'live' && camera.sourcePid !== pid, 15000)
  assert.equal(camera.status().restarts, 1)
  // The same connections decode the restarted source (numbering continues, so the browsers' jitter buffers accept it).
  for (const p of [a, b]) await waitFor('decoding again after the restart', async () => (await videoState(p)).framesDecoded > before + 20, 10000)
  await a.screenshot({ path: artifact('camera-restarted.png') })
  assert.ok(logs.some((l) => l.msg === 'camera source dead: restarting with backoff'))
  assert.equal(logs.filter((l) => l.msg.startsWith('page error')).length, 0, logs.filter((l) => l.msg.startsWith('page error')).map((l) => l.msg).join('\n'))
})
