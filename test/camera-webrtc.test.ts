// The camera end to end: ffmpeg (started and supervised by the camera service as its configured command) -> RTP ->
// WebRTC -> two Chromium viewers decoding frames; a third viewer refused; the source killed -> the panel shows it
// dead, the supervisor restarts it and the same viewers decode again.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import type { Browser, Page } from 'playwright-core'
import { cameraSchema } from '../gateway/camera/config.ts'
import { freePort, waitFor } from './helpers/net.ts'
import { startCameraHarness } from './helpers/camera-harness.ts'
import { launchBrowser, artifact } from './helpers/browser.ts'
import { ffmpegSource, requireCameraPeers, videoState } from './helpers/camera.ts'

test('camera: ffmpeg -> gateway -> two Chromium viewers; source killed -> dead, restarted, decoding again', async (t) => {
  requireCameraPeers()
  const logs: { level: number; msg: string }[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => { logs.push(JSON.parse(s) as { level: number; msg: string }) } })
  const config = cameraSchema.parse({
    enabled: true, command: ffmpegSource(), rtpPort: await freePort(), bindAddress: '127.0.0.1', maxViewers: 2,
    stallMs: 3000, restartMinMs: 2500, restartMaxMs: 4000,
  })
  const harness = await startCameraHarness(config, log, await freePort())
  const camera = harness.camera
  let browser: Browser | null = null
  t.after(async () => {
    await browser?.close()
    await harness.stop()
  })
  browser = await launchBrowser()
  const open = async (): Promise<Page> => {
    const page = await browser!.newPage({ viewport: { width: 680, height: 460 } })
    page.on('pageerror', (e) => logs.push({ level: 50, msg: `page error: ${e.message}` }))
    await page.goto(harness.url)
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
