// The dashboard server in this process on a real HTTP server and real sockets: the channel seam (camera) routes
// messages both ways and closes with the browser, and a browser that stops reading gets coalesced updates
// (bounded memory) instead of an ever-growing queue.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect as tcpConnect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import pino from 'pino'
import { HttpServer } from '../gateway/http/server.ts'
import { GatewayBus } from '../gateway/events.ts'
import { DashboardServer, type StatusSnapshot } from '../gateway/dashboard/server.ts'
import { dashboardConfig } from '../gateway/dashboard/config.ts'
import type { ChannelMessage, DashboardChannel } from '../gateway/dashboard/channel.ts'
import { launchBrowser } from './helpers/browser.ts'
import { waitFor } from './helpers/net.ts'

const status: StatusSnapshot = { status: 'ok', reasons: [], outbox: null, upstreams: [], mqtt: { clients: 0, devices: 0 } }

async function startDashboard(channels: DashboardChannel[] = []): Promise<{ http: HttpServer; dash: DashboardServer; bus: GatewayBus; stop(): Promise<void> }> {
  const log = pino({ level: 'silent' })
  const http = new HttpServer('127.0.0.1', 0, log)
  const bus = new GatewayBus()
  const dash = new DashboardServer({
    config: dashboardConfig.parse({}), http, bus, log, gatewayId: 'gw', version: '0', mqttPort: 1883,
    devices: () => [], device: () => undefined, addDevice: () => Promise.reject(new Error('not here')),
    dispatch: (cmd) => Promise.resolve({ id: cmd.id, device: cmd.device, name: cmd.name, ok: true, result: null }),
    status: () => Promise.resolve(status),
  })
  for (const c of channels) dash.addChannel(c)
  dash.start()
  await http.start()
  return { http, dash, bus, async stop() { await dash.stop(); await http.stop() } }
}

test('channel seam: hello lists the feature; prefixed messages reach the channel, its sends reach the browser, close follows the socket', async () => {
  const got: ChannelMessage[] = []
  let opened = 0
  let closed = 0
  const camera: DashboardChannel = {
    prefix: 'camera',
    open(session) {
      opened++
      return {
        receive(msg) { got.push(msg); session.send({ type: 'camera.answer', to: msg.type, user: session.user }) },
        close() { closed++ },
      }
    },
  }
  const d = await startDashboard([camera])
  assert.throws(() => d.dash.addChannel({ ...camera }), /already registered/)
  assert.throws(() => d.dash.addChannel({ prefix: 'Bad.Prefix', open: camera.open }), /prefix/)
  const browser = await launchBrowser()
  try {
    const page = await browser.newPage()
    // Any page of this origin will do; the socket is what matters.
    await page.goto(`http://127.0.0.1:${d.http.port}/ui/favicon.svg`)
    const r = await page.evaluate(async () => {
      const ws = new WebSocket(`ws://${location.host}/ws`)
      const msgs: { type: string; features?: Record<string, boolean>; to?: string; user?: string }[] = []
      ws.onmessage = (e) => msgs.push(JSON.parse(e.data as string) as { type: string })
      await new Promise((res) => { ws.onopen = res })
      ws.send(JSON.stringify({ type: 'camera.offer', sdp: 'v=0' }))
      const deadline = Date.now() + 5000
      while (!msgs.some((m) => m.type === 'camera.answer') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      ws.close()
      return msgs
    })
    assert.deepEqual(r[0]?.features, { camera: true })
    assert.deepEqual(r.find((m) => m.type === 'camera.answer'), { type: 'camera.answer', to: 'camera.offer', user: 'local' })
    assert.deepEqual(got, [{ type: 'camera.offer', sdp: 'v=0' }])
    assert.equal(opened, 1)
    await waitFor('channel closed with the socket', () => closed === 1, 5000)
  } finally {
    await browser.close()
    await d.stop()
  }
})

/** A WebSocket client that completes the handshake and then never reads: the slowest possible browser. */
async function stalledClient(port: number): Promise<Socket> {
  const s = tcpConnect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
  s.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`)
  await new Promise<void>((resolve) => s.once('data', (d: Buffer) => { assert.match(d.toString(), /^HTTP\/1.1 101/); resolve() }))
  s.pause()
  return s
}

test('backpressure: a browser that stops reading gets the latest value per series, not an ever-growing queue', async () => {
  const d = await startDashboard()
  const s = await stalledClient(d.http.port)
  try {
    await waitFor('connected', () => d.dash.stats.connections === 1, 5000)
    const pad = 'x'.repeat(1000)
    // 10 devices x 2000 readings, far more than the socket buffers can hold.
    for (let i = 0; i < 2000; i++) {
      for (let k = 0; k < 10; k++) d.bus.safeEmit('reading', { device: `d${k}`, link: 'mqtt', ts: Date.now(), seq: i, metrics: { v: i, pad } })
      if (i % 100 === 0) await new Promise((r) => setImmediate(r))
    }
    const st = d.dash.stats
    const offered = 20_000 * 1060
    // What went to the socket is bounded by the kernel's socket buffers plus the high-water mark (a few MB on
    // loopback), not the 21 MB offered; the rest was coalesced away.
    assert.ok(st.sentBytes < offered * 0.4, `sent ${st.sentBytes} of ${offered} bytes`)
    assert.ok(st.coalesced > 12_000, `coalesced ${st.coalesced} of 20,000 readings`)
    // Now the browser reads again: the newest reading of every device arrives.
    let text = ''
    s.on('data', (b: Buffer) => { text += b.toString('latin1') })
    s.resume()
    await waitFor('latest values delivered', () => Array.from({ length: 10 }, (_, k) => text.includes(`"device":"d${k}","link":"mqtt"`) && new RegExp(`"device":"d${k}"[^}]*"metrics":\\{"v":1999,`).test(text)).every(Boolean), 10000, 50)
  } finally {
    s.destroy()
    await d.stop()
  }
})
