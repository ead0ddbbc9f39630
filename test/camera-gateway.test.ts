// The camera inside the real gateway process: off by default; enabled, its state, viewers and bitrate reach /healthz
// and /metrics; a dead source degrades health and the gateway keeps running; a source that cannot start says why.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { freePort, waitFor } from './helpers/net.ts'
import { ffmpegSource, requireCameraPeers } from './helpers/camera.ts'

interface CameraHealth { status: string; reasons: string[]; camera: { enabled: boolean; state: string; reason: string | null; restarts: number; viewers: number; bitrate: number } }
const health = async (g: GatewayProc): Promise<CameraHealth> => (await g.health()) as unknown as CameraHealth

test('camera off by default: state off, health ok, no camera metrics, no source started', async (t) => {
  const g = await startGatewayProc()
  // SIGTERM first: the gateway stops its source (a SIGKILLed gateway would leave ffmpeg running; systemd kills the cgroup).
  t.after(async () => { await g.stop(); await g.cleanup() })
  const h = await health(g)
  assert.equal(h.status, 'ok')
  assert.equal(h.camera.state, 'off')
  assert.equal(h.camera.enabled, false)
  assert.doesNotMatch((await g.http('/metrics')).body, /edgeway_camera_/)
})

test('camera in the gateway: live with bitrate; source killed -> degraded, gateway runs, source restarted', async (t) => {
  requireCameraPeers()
  const rtpPort = await freePort()
  const g = await startGatewayProc({ camera: { enabled: true, command: ffmpegSource(), rtpPort, bindAddress: '127.0.0.1', stallMs: 3000, restartMinMs: 2500, restartMaxMs: 4000 } })
  // SIGTERM first: the gateway stops its source (a SIGKILLed gateway would leave ffmpeg running; systemd kills the cgroup).
  t.after(async () => { await g.stop(); await g.cleanup() })
  const live = await waitFor('camera live', async () => { const h = await health(g); return h.camera.state === 'live' && h.camera.bitrate > 0 && h }, 15000)
  assert.equal(live.status, 'ok')
  assert.equal(await g.metric('edgeway_camera_source_up'), 1)
  // The bitrate is over the last full seconds: it needs a moment after going live.
  await waitFor('bitrate on /metrics', async () => await g.metric('edgeway_camera_bitrate_bits') > 50_000, 5000)
  assert.equal(await g.metric('edgeway_camera_viewers'), 0)
  const started = await g.waitLog((l) => l.msg === 'camera source started')
  process.kill(started.sourcePid as number, 'SIGKILL')
  const dead = await waitFor('camera dead in health', async () => { const h = await health(g); return h.camera.state === 'dead' && h }, 5000)
  assert.equal(dead.status, 'degraded')
  assert.ok(dead.reasons.some((r) => /camera source dead for \d+ s \(the camera source exited \(signal SIGKILL\)/.test(r)), dead.reasons.join('; '))
  assert.equal(await g.metric('edgeway_camera_source_up'), 0)
  const back = await waitFor('camera live again', async () => { const h = await health(g); return h.camera.state === 'live' && h }, 15000)
  assert.equal(back.status, 'ok')
  assert.equal(back.camera.restarts, 1)
  assert.equal(g.proc.exitCode, null, 'the gateway kept running')
  assert.equal(await g.stop(), 0, 'and stops cleanly, with its source')
  assert.ok(g.logs.some((l) => l.msg === 'stopped'))
})

test('camera source that cannot start, or sends junk: dead with the reason, gateway runs', async (t) => {
  const rtpPort = await freePort()
  const g = await startGatewayProc({ camera: { enabled: true, command: ['/nonexistent/camera-tool', '--port', '{rtpPort}'], rtpPort, restartMinMs: 200, restartMaxMs: 400 } })
  // SIGTERM first: the gateway stops its source (a SIGKILLed gateway would leave ffmpeg running; systemd kills the cgroup).
  t.after(async () => { await g.stop(); await g.cleanup() })
  const h = await waitFor('dead', async () => { const x = await health(g); return x.camera.state === 'dead' && x }, 5000)
  assert.equal(h.status, 'degraded')
  assert.match(h.camera.reason!, /\/nonexistent\/camera-tool not found \(camera\.command\)/)
  await g.waitLog((l) => l.msg === 'camera source dead: restarting with backoff')
  await waitFor('restart attempts', async () => (await health(g)).camera.restarts >= 2, 5000)
  // Not RTP on the RTP port: one clear warning, nothing forwarded, no crash.
  const sock = createSocket('udp4')
  await new Promise<void>((r) => sock.send(Buffer.from('definitely not RTP'), rtpPort, '127.0.0.1', () => r()))
  await g.waitLog((l) => /not RTP was dropped/.test(l.msg))
  assert.equal((await health(g)).camera.state, 'dead', 'junk does not make a dead source look alive')
  // RTP too large for the path MTU once encrypted: one warning with the fix.
  const big = Buffer.alloc(1472)
  big[0] = 0x80
  big[1] = 96
  await new Promise<void>((r) => sock.send(big, rtpPort, '127.0.0.1', () => r()))
  sock.close()
  await g.waitLog((l) => /large RTP packets/.test(l.msg) && /-pkt_size 1200/.test(l.msg))
  assert.equal(g.proc.exitCode, null)
})

test('camera RTP port already taken: dead with a clear reason, the gateway still starts', async (t) => {
  const rtpPort = await freePort()
  const blocker = createSocket('udp4')
  await new Promise<void>((r) => blocker.bind(rtpPort, '127.0.0.1', () => r()))
  t.after(() => blocker.close())
  const g = await startGatewayProc({ camera: { enabled: true, rtpPort } })
  // SIGTERM first: the gateway stops its source (a SIGKILLed gateway would leave ffmpeg running; systemd kills the cgroup).
  t.after(async () => { await g.stop(); await g.cleanup() })
  const h = await health(g)
  assert.equal(h.camera.state, 'dead')
  assert.match(h.camera.reason!, new RegExp(`cannot listen for RTP on 127.0.0.1:${rtpPort}: address already in use`))
  assert.equal(h.status, 'degraded')
})
