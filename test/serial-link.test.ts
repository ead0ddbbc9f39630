// The serial link in-process against the real sensor-node firmware in a simulated board: readings, acks after the
// outbox commit, hello/firmware, commands (report interval changes the rate, read now, set output, reboot).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { pino } from 'pino'
import { GatewayBus } from '../gateway/events.ts'
import type { RawReading } from '../gateway/readings.ts'
import { SerialLink } from '../devices/serial/link.ts'
import { buildSimBoard, startSimBoard } from './helpers/simavr.ts'
import { waitFor, pause } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

interface Got { metrics: Record<string, number>; at: number }

function harness() {
  const got: Got[] = []
  const registry = { online: new Map<string, boolean>(), firmware: new Map<string, string>(),
    setOnline(id: string, on: boolean) { this.online.set(id, on) }, setFirmware(id: string, v: string) { this.firmware.set(id, v) } }
  const outbox = {
    failing: false,
    append(raw: RawReading, done: (err: Error | null) => void) {
      // Commit "later", like the real outbox worker: the link must wait for it before acking.
      setTimeout(() => {
        if (outbox.failing) { done(new Error('disk full')); return }
        got.push({ metrics: JSON.parse(Buffer.from(raw.payload).toString()) as Record<string, number>, at: Date.now() })
        done(null)
      }, 5)
    },
  }
  const bus = new GatewayBus()
  const events: string[] = []
  bus.on('deviceOnline', (e) => events.push(`online:${e.device}`))
  bus.on('deviceOffline', (e) => events.push(`offline:${e.device}:${e.reason}`))
  bus.on('firmware', (e) => events.push(`firmware:${e.device}:${e.version}`))
  return { got, registry, outbox, bus, events }
}

test('readings arrive, are acked after commit, commands work and the interval changes the rate', async () => {
  const build = buildSimBoard({ version: '1.0.0', intervalMs: 500 })
  cleanups.push(build.cleanup)
  const board = await startSimBoard(build, join(build.dir, 'uart0'))
  cleanups.push(() => board.stop())
  const h = harness()
  const link = new SerialLink({ device: 'node-1', path: board.path, baudRate: 115200, framing: 'cobs', reopenMinMs: 50, reopenMaxMs: 500, offlineAfterMs: 3000 },
    { outbox: h.outbox, registry: h.registry, bus: h.bus, log: pino({ level: 'silent' }) })
  cleanups.push(() => link.stop())
  link.start()
  await waitFor('hello', () => h.registry.firmware.get('node-1') === 'sensor-node 1.0.0', 5000)
  assert.equal(h.registry.online.get('node-1'), true)
  assert.deepEqual(h.events.slice(0, 1), ['online:node-1'])
  assert.ok(h.events.includes('firmware:node-1:sensor-node 1.0.0'), 'live views hear the firmware version')
  await waitFor('3 readings', () => h.got.length >= 3, 5000)
  const r = h.got.at(-1)!.metrics
  assert.equal(r.adc0, 511, '2.5 V on ADC0 with a 5 V reference')
  assert.ok(r.sim! >= 200 && r.sim! <= 300)
  assert.equal(typeof r.seq, 'number')

  // Acked readings leave the board's window: with every reading acked, nothing is ever skipped or duplicated.
  const before = h.got.length
  await new Promise((res) => setTimeout(res, 2000))
  const slow = h.got.length - before
  assert.ok(slow >= 2 && slow <= 6, `~2 readings/s at 500 ms, got ${slow} in 2 s`)

  assert.equal(await link.send({ op: 'setInterval', ms: 100 }), 'ok')
  const mark = h.got.length
  await new Promise((res) => setTimeout(res, 2000))
  const fast = h.got.length - mark
  assert.ok(fast >= 14 && fast <= 24, `~10 readings/s at 100 ms, got ${fast} in 2 s`)

  const counts = h.got.map((g) => g.metrics.count!)
  const firstAfterStart = counts.indexOf(counts.find((c) => c > 4)!)
  const tail = counts.slice(firstAfterStart)
  for (let i = 1; i < tail.length; i++) assert.equal(tail[i], tail[i - 1]! + 1, `no reading lost or stored twice: ${tail.join(',')}`)
  assert.equal(link.status().framing.badFrames, 0)

  assert.equal(await link.send({ op: 'setOutput', pin: 13, value: true }), 'ok')
  assert.equal(await link.send({ op: 'setOutput', pin: 1, value: true }), 'bad_args')
  assert.equal(await link.send({ op: 'setInterval', ms: 1000 }), 'ok')
  const m2 = h.got.length
  assert.equal(await link.send({ op: 'readNow' }), 'ok')
  await waitFor('read now', () => h.got.length > m2, 500)

  // Outbox failing: readings are NACKed and retransmitted, none lost once it recovers.
  await link.send({ op: 'setInterval', ms: 100 })
  h.outbox.failing = true
  await pause(800)
  const lastBefore = h.got.at(-1)!.metrics.count!
  h.outbox.failing = false
  await waitFor('recovered', () => h.got.length > 0 && h.got.at(-1)!.metrics.count! > lastBefore + 10, 5000)
  const after = h.got.map((g) => g.metrics.count!).filter((c) => c > lastBefore)
  const skipped = h.got.at(-1)!.metrics.skipped!
  // The window held 4 while the outbox failed; samples beyond it were skipped on the board (and counted there).
  assert.ok(skipped > 0, 'board counted the samples it could not keep')
  assert.deepEqual(after.slice(0, 4).sort((a, b) => a - b), [lastBefore + 1, lastBefore + 2, lastBefore + 3, lastBefore + 4], 'the unacked window is retransmitted (in slot order, not seq order)')

  assert.equal(await link.send({ op: 'reboot' }), 'ok')
  await waitFor('count restarts after reboot', () => h.got.length > 0 && h.got.at(-1)!.metrics.count! <= 3, 5000)
  assert.equal(h.registry.firmware.get('node-1'), 'sensor-node 1.0.0')
})
