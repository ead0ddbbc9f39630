// End to end: sensor-node firmware (built by this run) in a simulated ATmega328P, its UART on a pty, the gateway
// (child process) on that pty, readings through the outbox to a real Mosquitto. Garbage on the line, and hotplug.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { startMosquitto } from './helpers/mosquitto.ts'
import { buildSimBoard, startSimBoard, type SimBoard } from './helpers/simavr.ts'
import { waitFor, pause } from './helpers/net.ts'
import { endClient, type MqttClient } from './helpers/mqtt.ts'
import mqtt from 'mqtt'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

interface Telemetry { id: string; device: string; link: string; deviceSeq?: number; metrics: Record<string, number> }

async function collector(url: string): Promise<{ got: Telemetry[]; client: MqttClient }> {
  const client = mqtt.connect(url, { reconnectPeriod: 100 })
  client.on('error', () => undefined)
  const got: Telemetry[] = []
  client.on('message', (_t, p) => got.push(JSON.parse(p.toString()) as Telemetry))
  await new Promise<void>((resolve) => client.once('connect', () => resolve()))
  await client.subscribeAsync('edgeway/#', { qos: 1 })
  return { got, client }
}

async function device(g: GatewayProc, id: string): Promise<{ online: boolean; link: string; firmwareVersion: string }> {
  const r = await g.cli(['device', 'show', id])
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout) as { online: boolean; link: string; firmwareVersion: string }
}

const count = (g: GatewayProc, msg: string): number => g.logs.filter((l) => l.msg === msg).length

test('serial board -> gateway -> outbox -> upstream; garbage skipped with no reading lost; hotplug', async () => {
  const build = buildSimBoard({ version: '1.0.0', intervalMs: 200 })
  cleanups.push(build.cleanup)
  const path = join(build.dir, 'uart0')
  let board: SimBoard = await startSimBoard(build, path)
  cleanups.push(() => board.stop())
  const mosq = await startMosquitto()
  cleanups.push(() => mosq.stop())
  const up = await collector(`mqtt://127.0.0.1:${mosq.port}`)
  cleanups.push(() => endClient(up.client))
  const g = await startGatewayProc({
    serial: { ports: [{ device: 'node-1', path, baudRate: 115200, reopenMinMs: 100, reopenMaxMs: 500, offlineAfterMs: 3000 }] },
    upstreams: [{ name: 'ref', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, reconnectMinMs: 100, reconnectMaxMs: 1000 }],
  })
  cleanups.push(() => g.cleanup())

  const hello = await g.waitLog((l) => l.msg === 'serial device says hello', 5000)
  assert.equal(hello.firmware, 'sensor-node 1.0.0')
  await waitFor('readings counted', async () => (await g.metric('edgeway_messages_in_total', { link: 'serial' })) >= 5, 10000)
  await waitFor('readings upstream', () => up.got.length >= 5, 10000)
  const first = up.got[0]!
  assert.equal(first.device, 'node-1')
  assert.equal(first.link, 'serial')
  assert.equal(first.metrics.adc0, 511)
  assert.equal(typeof first.deviceSeq, 'number')
  const d = await device(g, 'node-1')
  assert.deepEqual([d.online, d.link, d.firmwareVersion], [true, 'serial', 'sensor-node 1.0.0'])

  // Garbage on the line: 10 bursts of 64 random bytes, each right after a frame delimiter.
  for (let i = 0; i < 10; i++) { board.injectGarbage(); await pause(150) }
  await waitFor('all garbage on the line', () => board.stderr().split('injected 64 garbage bytes').length - 1 === 10, 5000)
  const noise = await waitFor('noise logged', () => [...g.logs].reverse().find((l) => l.msg === 'serial line noise: damaged frames and garbage skipped' && (l.badFrames as number) + (l.resyncs as number) >= 10), 5000)
  const atNoise = up.got.length
  await waitFor('more readings after the garbage', () => up.got.length >= atNoise + 10, 10000)
  // the same counts on /metrics
  const damaged = await g.metric('edgeway_serial_frames_total', { device: 'node-1', result: 'bad' }) + await g.metric('edgeway_serial_frames_total', { device: 'node-1', result: 'resync' })
  assert.ok(damaged >= 10, `line noise counted on /metrics (${damaged})`)
  assert.ok(await g.metric('edgeway_serial_frames_total', { device: 'node-1', result: 'ok' }) > 10)
  assert.equal(g.proc.exitCode, null, 'gateway still running')
  // Once the gateway acks, the board never skips a sample: every reading from then on must be there exactly once.
  const skippedFinal = up.got.at(-1)!.metrics.skipped!
  const counts = up.got.filter((t) => t.metrics.skipped === skippedFinal).map((t) => t.metrics.count!).sort((a, b) => a - b)
  assert.ok(counts.length >= 20, `enough readings: ${counts.length}`)
  for (let i = 1; i < counts.length; i++) assert.equal(counts[i], counts[i - 1]! + 1, `reading ${counts[i - 1]! + 1} lost or duplicated (bad=${String(noise.badFrames)} resyncs=${String(noise.resyncs)})`)

  // Hotplug: the board goes away (pty and its link vanish) -> link down, device offline; back -> up by itself.
  await board.stop()
  await g.waitLog((l) => l.msg === 'serial port lost: board unplugged or gone; reopening with backoff', 5000)
  await g.waitLog((l) => l.msg === 'serial device offline', 5000)
  assert.equal((await device(g, 'node-1')).online, false)
  await pause(1000) // a few failed reopens while unplugged
  assert.equal(g.proc.exitCode, null, 'a vanished port never stops the gateway')
  const before = await g.metric('edgeway_messages_in_total', { link: 'serial' })
  board = await startSimBoard(build, path)
  await waitFor('online again', () => count(g, 'serial device online') >= 2, 10000)
  await waitFor('readings again', async () => (await g.metric('edgeway_messages_in_total', { link: 'serial' })) >= before + 5, 10000)
  assert.equal((await device(g, 'node-1')).online, true)
  assert.equal(count(g, 'serial port open'), 2)
  assert.ok(await g.metric('edgeway_serial_reopens_total', { device: 'node-1' }) >= 1, 'the reopen is counted on /metrics')

  // A clean stop with the port open: exits 0 and leaves the board recorded offline.
  assert.equal(await g.stop(), 0)
  assert.equal((await device(g, 'node-1')).online, false)
})
