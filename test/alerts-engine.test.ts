// The alerts engine with fake timers: bus in, bus out; an alert storm (many devices flapping) gives bounded log
// lines and alerts; metrics follow; stop() raises nothing; health turns degraded (never failed) with the texts.
import { test, mock } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { GatewayBus } from '../gateway/events.ts'
import { Metrics } from '../gateway/metrics.ts'
import { AlertEngine } from '../gateway/alerts/engine.ts'
import { alertsSection } from '../gateway/alerts/config.ts'
import type { AlertEvent, UpstreamSnapshot } from '../gateway/alerts/rules.ts'
import { evaluateHealth } from '../gateway/health.ts'
import type { OutboxStats } from '../gateway/outbox/types.ts'

function setup(over: Record<string, unknown>, upstreams: UpstreamSnapshot[] = []) {
  mock.timers.enable({ apis: ['setTimeout'] })
  let now = 5_000_000
  const lines: Record<string, unknown>[] = []
  const log = pino({ level: 'info' }, { write: (s: string) => { lines.push(JSON.parse(s) as Record<string, unknown>) } })
  const bus = new GatewayBus((err) => { throw err })
  const metrics = new Metrics()
  const got: AlertEvent[] = []
  bus.on('alertRaised', (e) => got.push(e))
  bus.on('alertCleared', (e) => got.push(e))
  const engine = new AlertEngine({ config: alertsSection.parse(over), bus, log, metrics, tracked: (d) => !d.startsWith('anon'), upstreams: () => upstreams, now: () => now })
  return {
    engine, bus, metrics, got, lines,
    /** Moves the fake clock and the mocked timers together, in steps of at most 100 ms. */
    advance(ms: number) { for (let left = ms; left > 0; left -= 100) { const step = Math.min(100, left); now += step; mock.timers.tick(step) } },
    get now() { return now },
  }
}

const online = (bus: GatewayBus, device: string): void => bus.safeEmit('deviceOnline', { device, link: 'mqtt', clientId: device })
const offline = (bus: GatewayBus, device: string): void => bus.safeEmit('deviceOffline', { device, link: 'mqtt', clientId: device, reason: 'taken over' })

test('alert storm: 200 devices flapping every 200 ms for 2 minutes -> one alert and one log line each, then one clear each', async (t) => {
  t.after(() => mock.timers.reset())
  const s = setup({ offlineHoldSeconds: 10 })
  s.engine.start()
  const devices = Array.from({ length: 200 }, (_, i) => `dev-${i}`)
  for (const d of devices) online(s.bus, d)
  for (let round = 0; round < 600; round++) {
    for (const d of devices) offline(s.bus, d)
    s.advance(100)
    for (const d of devices) online(s.bus, d)
    s.advance(100)
  }
  const raised = s.lines.filter((l) => l.msg === 'alert raised')
  assert.equal(raised.length, 200, 'one log line per device for the whole storm')
  assert.equal(s.got.filter((e) => e.type === 'raised').length, 200)
  assert.equal(s.engine.active().length, 200)
  assert.equal(s.lines.length, 200, `nothing else logged: ${s.lines.length} lines`)
  assert.equal(raised[0]!.level, 40, 'raised at warn')
  assert.equal(raised[0]!.rule, 'device_offline')
  assert.match(String(raised[0]!.text), /^dev-0 went offline \d+ times in 10 s \(flapping; last: taken over\)$/)
  assert.match(await s.metrics.text(), /edgeway_alerts_active\{rule="device_offline"\} 200/)
  assert.match(await s.metrics.text(), /edgeway_alerts_raised_total\{rule="device_offline"\} 200/)
  // Calm: every device online since the last flap; cleared 10 s later, once each, at info.
  s.advance(9_800)
  assert.equal(s.got.filter((e) => e.type === 'cleared').length, 0)
  s.advance(400)
  const cleared = s.lines.filter((l) => l.msg === 'alert cleared')
  assert.equal(cleared.length, 200)
  assert.equal(cleared[0]!.level, 30)
  assert.equal(s.engine.active().length, 0)
  assert.match(await s.metrics.text(), /edgeway_alerts_active\{rule="device_offline"\} 0/)
  s.engine.stop()
})

test('hold-down timers fire without further input; anonymous devices never alert; stop() ends it silently', (t) => {
  t.after(() => mock.timers.reset())
  const s = setup({ offlineHoldSeconds: 2 })
  s.engine.start()
  online(s.bus, 'd1')
  online(s.bus, 'anon-1')
  offline(s.bus, 'd1')
  offline(s.bus, 'anon-1')
  s.advance(1_900)
  assert.equal(s.got.length, 0)
  s.advance(200)
  assert.deepEqual(s.got.map((e) => e.alert.id), ['device_offline:d1'])
  assert.deepEqual(s.engine.active().map((a) => [a.id, a.since]), [['device_offline:d1', new Date(s.now - 2_100).toISOString()]])
  // A gateway stop: the remaining devices go offline with it, and nothing is raised.
  online(s.bus, 'd2')
  s.engine.stop()
  offline(s.bus, 'd2')
  s.advance(10_000)
  assert.equal(s.got.length, 1)
})

test('thresholds from readings, upstream down from the polled snapshot, outbox from observeOutbox; health degraded, not failed', async (t) => {
  t.after(() => mock.timers.reset())
  const ups: UpstreamSnapshot[] = [{ name: 'cloud', connected: false, since: 5_000_000, lastError: 'ECONNREFUSED' }]
  const s = setup({ thresholds: [{ metric: 'temperature', above: 30 }], upstreamDownSeconds: 3, backlogAgeSeconds: 60 }, ups)
  s.engine.start()
  s.bus.safeEmit('reading', { device: 's1', link: 'mqtt', ts: s.now, seq: 1, metrics: { temperature: 31 } })
  assert.deepEqual(s.got.map((e) => e.text), ['s1: temperature = 31 is above 30'])
  s.advance(2_900)
  assert.equal(s.got.length, 1, 'upstream down for less than 3 s')
  s.advance(1_200) // upstream states are polled once a second
  assert.deepEqual(s.got.map((e) => e.alert.id), ['threshold:s1:temperature>30', 'upstream_down:cloud'])
  const stats: OutboxStats = { depth: 10, bytes: 1000, oldestAgeMs: 61_000, lastRowId: 10, fileBytes: 4096, drops: { retention_bytes: 0, retention_age: 0 }, appended: 10, commits: 1, diskFull: false, deadLettered: 0, deadRequeued: 0, lastError: null, upstreams: [] }
  s.engine.observeOutbox(stats)
  assert.equal(s.got.at(-1)?.alert.id, 'outbox_backlog')
  const active = s.engine.active()
  const h = evaluateHealth({ outbox: stats, outboxError: null, upstreams: [], maxBytes: 1e9, now: s.now, alerts: active })
  assert.equal(h.status, 'degraded')
  assert.deepEqual(h.reasons.slice().sort(), active.map((a) => a.text).sort())
  ups[0]!.connected = true
  s.advance(1_100)
  assert.equal(s.got.at(-1)?.type, 'cleared')
  assert.equal(s.got.at(-1)?.alert.id, 'upstream_down:cloud')
  s.engine.stop()
})
