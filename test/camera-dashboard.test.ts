// The camera through the real dashboard: the gateway process starts ffmpeg (its configured camera command) and
// forwards its H.264 RTP over WebRTC to two logged-in Chromium pages, signalled over the dashboard WebSocket.
// The source is killed -> the panel and /healthz show it dead, the gateway keeps running, the supervisor restarts the
// source and the same viewers decode again. Without a session the WebSocket (and so any offer) is refused.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Browser, Page } from 'playwright-core'
import { startGatewayProc } from './helpers/gateway.ts'
import { setPassword } from './helpers/dashboard.ts'
import { tryUpgrade } from './helpers/http-raw.ts'
import { freePort, waitFor } from './helpers/net.ts'
import { launchBrowser, artifact } from './helpers/browser.ts'
import { ffmpegSource, requireCameraPeers, videoState } from './helpers/camera.ts'

const PASSWORD = 'camera test password'

test('camera in the dashboard: two viewers decode; source killed -> dead panel and health, restarted, decoding again', async (t) => {
  requireCameraPeers()
  const g = await startGatewayProc({
    camera: { enabled: true, command: ffmpegSource(), rtpPort: await freePort(), bindAddress: '127.0.0.1', maxViewers: 2, stallMs: 3000, restartMinMs: 2500, restartMaxMs: 4000 },
  }, { start: false })
  const r = await setPassword(g.configFile, PASSWORD)
  assert.equal(r.code, 0, r.stderr)
  await g.start()
  let browser: Browser | null = null
  // SIGTERM first: the gateway stops its source.
  t.after(async () => { await browser?.close(); await g.stop(); await g.cleanup() })
  const base = `http://127.0.0.1:${g.httpPort}`

  // No session, no signalling: the dashboard refuses the WebSocket before the camera channel sees anything.
  assert.equal(await tryUpgrade(`${base}/ws`, { origin: base }), 401)

  browser = await launchBrowser()
  const errors: string[] = []
  const open = async (): Promise<Page> => {
    const page = await (await browser!.newContext({ viewport: { width: 1100, height: 900 } })).newPage()
    page.on('pageerror', (e) => errors.push(e.message))
    await page.goto(base + '/')
    await page.fill('#password', PASSWORD)
    await page.click('button[type=submit]')
    await page.waitForURL(base + '/')
    return page
  }
  const [a, b] = [await open(), await open()]
  for (const p of [a, b]) {
    const s0 = await waitFor('frames decoded', async () => { const s = await videoState(p); return s.framesDecoded > 5 && s.playing && s }, 20000)
    assert.equal(s0.width, 640)
    await new Promise((res) => setTimeout(res, 1000))
    const s1 = await videoState(p)
    assert.ok(s1.framesDecoded >= s0.framesDecoded + 15, `frames keep coming: ${s0.framesDecoded} -> ${s1.framesDecoded} in 1 s`)
    assert.equal(s1.state, 'live')
  }
  await waitFor('panel shows 2 viewers and a bitrate', async () => /^2 viewers · \d+ kbit\/s/.test((await videoState(a)).figures) && (await videoState(a)).figures !== '2 viewers · 0 kbit/s')
  assert.equal(await g.metric('edgeway_camera_viewers'), 2)
  await a.locator('#camera').scrollIntoViewIfNeeded()
  await a.screenshot({ path: artifact('camera-dashboard-live.png'), fullPage: true })

  // A third viewer is refused (camera.maxViewers 2), with the reason in its panel.
  const c = await open()
  const refused = await waitFor('refusal shown', async () => { const s = await videoState(c); return /too many viewers/.test(s.overlay) && s })
  assert.equal(refused.framesDecoded, 0)
  await c.context().close()

  const started = await g.waitLog((l) => l.msg === 'camera source started')
  process.kill(started.pid as number, 'SIGKILL')
  const dead = await waitFor('panel shows the source dead', async () => { const s = await videoState(a); return s.state === 'dead' && s }, 5000)
  assert.match(dead.overlay, /source is down: the camera source exited \(signal SIGKILL\)/)
  const h = await g.health() as unknown as { status: string; reasons: string[] }
  assert.equal(h.status, 'degraded')
  assert.ok(h.reasons.some((x) => x.startsWith('camera source dead')))
  await a.screenshot({ path: artifact('camera-dashboard-dead.png'), fullPage: true })

  const before = (await videoState(b)).framesDecoded
  await g.waitLog((l) => l.msg === 'camera source live' && l.time as number > (started.time as number) + 1000, 15000)
  for (const p of [a, b]) await waitFor('decoding again after the restart', async () => (await videoState(p)).framesDecoded > before + 20, 10000)
  assert.equal(g.proc.exitCode, null, 'the gateway kept running')
  assert.equal(((await g.health()) as unknown as { status: string }).status, 'ok')
  await a.screenshot({ path: artifact('camera-dashboard-restarted.png'), fullPage: true })
  assert.deepEqual(errors, [])
  // Stopping with viewers connected is clean and quick (peers closed, libdatachannel released, source stopped).
  const t0 = Date.now()
  assert.equal(await g.stop(), 0)
  assert.ok(Date.now() - t0 < 4000, `stop took ${Date.now() - t0} ms`)
  await waitFor('the panels say the gateway is gone or the camera off', async () => (await videoState(a)).state !== 'live', 5000)
})
