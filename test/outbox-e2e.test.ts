// Store-and-forward end to end: devices -> gateway -> outbox -> mqtt upstream -> a real Mosquitto.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.ts'
import { simulateDevice, upstreamCollector, audit, type DeviceSim } from './helpers/load.ts'
import { waitFor, pause } from './helpers/net.ts'
import { end } from './helpers/mqtt.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

async function setup(persistentUpstream: boolean): Promise<{ g: GatewayProc; mosq: Mosquitto; collector: Awaited<ReturnType<typeof upstreamCollector>> }> {
  const mosq = await startMosquitto(undefined, { persistence: persistentUpstream })
  cleanups.push(() => mosq.stop())
  const collector = await upstreamCollector(`mqtt://127.0.0.1:${mosq.port}`, `collector-${mosq.port}`)
  cleanups.push(() => end(collector.client))
  const g = await startGatewayProc({
    mqtt: { openBroker: true },
    upstreams: [{ name: 'ref', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, reconnectMinMs: 100, reconnectMaxMs: 1000, maxInflight: 100 }],
  })
  cleanups.push(() => g.cleanup())
  return { g, mosq, collector }
}

test('crash safety: SIGKILL under load from several clients loses no acknowledged reading (3 rounds)', async () => {
  const { g, collector } = await setup(false)
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const devices = ['k1', 'k2', 'k3', 'k4', 'k5']
  const all: DeviceSim[] = []
  const next = new Map(devices.map((d) => [d, 0]))
  for (let round = 0; round < 3; round++) {
    const sims = devices.map((d) => simulateDevice(url, d, { window: 16, startSeq: next.get(d)! }))
    all.push(...sims)
    await waitFor('load running', () => sims.every((s) => s.acked.size > 50), 15000)
    await pause(300 + round * 200)
    await g.kill()
    for (const s of sims) { await s.stop(); next.set(s.id, next.get(s.id)! + s.sent) }
    await g.start()
  }
  const acked = all.reduce((n, s) => n + s.acked.size, 0)
  assert.ok(acked > 1000, `enough load: ${acked} acked readings`)
  // Wait for the replay, then let the assertion name whatever is missing.
  await waitFor('every acked reading upstream', () => audit(all, collector.got).missing.length === 0, 60000, 200).catch(() => undefined)
  const report = audit(all, collector.got)
  assert.deepEqual(report.missing, [])
  assert.deepEqual(report.outOfOrder, [])
  // Everything delivered was settled: the outbox drains to empty.
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 20000)
})

test('upstream down: readings pile up in the outbox, health says so, all arrive in per-device order when it returns', async () => {
  const { g, mosq, collector } = await setup(true)
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const warm = simulateDevice(url, 'o0', { max: 20 })
  await waitFor('warm-up delivered', () => collector.got.length >= 20, 10000)
  await warm.stop()
  await mosq.stop('SIGTERM') // persistent: the collector's session (and what is queued for it) survives
  await waitFor('upstream seen down', async () => (await g.health()).upstreams[0]?.connected === false, 10000)
  const sims = ['o1', 'o2', 'o3'].map((d) => simulateDevice(url, d, { window: 8, max: 500 }))
  await waitFor('all acked while upstream down', () => sims.every((s) => s.acked.size === 500), 30000)
  const h = await g.health()
  assert.equal(h.status, 'degraded')
  assert.ok(h.reasons.some((r) => /upstream "ref" down/.test(r)), h.reasons.join('; '))
  assert.ok(h.outbox.depth >= 1500, `backlog ${h.outbox.depth}`)
  assert.ok((h.upstreams[0]?.lag ?? 0) >= 1500)
  const stuckAt = h.upstreams[0]?.ackedThrough ?? -1
  assert.ok(stuckAt >= 20 && stuckAt < 40, `acked through the warm-up rows only (${stuckAt})`)
  assert.ok(await g.metric('edgeway_upstream_lag', { upstream: 'ref' }) >= 1500)
  await mosq.start()
  await waitFor('backlog delivered', () => audit([warm, ...sims], collector.got).missing.length === 0, 60000, 200).catch(() => undefined)
  const report = audit([warm, ...sims], collector.got)
  assert.deepEqual(report.missing.slice(0, 20), [], `missing ${report.missing.length}; gateway: ${JSON.stringify(await g.health())}`)
  assert.deepEqual(report.outOfOrder, [])
  await waitFor('healthy again', async () => (await g.health()).status === 'ok', 20000)
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 20000)
  assert.ok(((await g.health()).upstreams[0]?.ackedThrough ?? 0) >= stuckAt + 1500, 'acked through every row')
  for (const s of sims) await s.stop()
})

test('retention: beyond outbox.maxBytes the oldest readings are dropped, counted and logged', async () => {
  const { freePort } = await import('./helpers/net.ts')
  const g = await startGatewayProc({
    mqtt: { openBroker: true },
    outbox: { maxBytes: 20000 },
    upstreams: [{ name: 'offline', type: 'mqtt', url: `mqtt://127.0.0.1:${await freePort()}`, reconnectMinMs: 5000, reconnectMaxMs: 10000 }],
  })
  cleanups.push(() => g.cleanup())
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 'ret', { max: 400, payloadPad: 100 })
  await waitFor('all acked', () => sim.acked.size === 400, 20000)
  await sim.stop()
  const line = await g.waitLog((l) => l.msg === 'outbox retention dropped the oldest readings', 5000)
  assert.equal(line.reason, 'retention_bytes')
  const dropped = await g.metric('edgeway_outbox_drops_total', { reason: 'retention_bytes' })
  const h = await g.health()
  assert.ok(dropped > 0)
  assert.equal(h.outbox.depth + dropped, 400, 'every reading is either still stored or counted as dropped')
  assert.ok((h.upstreams[0]?.lag ?? 0) <= h.outbox.depth, 'the cursor moved past the dropped readings')
})

test('SIGTERM under load: exits 0 within a few seconds and every acknowledged reading is stored', async () => {
  const { freePort } = await import('./helpers/net.ts')
  const { OutboxStore } = await import('../gateway/outbox/store.ts')
  const { join } = await import('node:path')
  const g = await startGatewayProc({
    mqtt: { openBroker: true },
    upstreams: [{ name: 'offline', type: 'mqtt', url: `mqtt://127.0.0.1:${await freePort()}`, reconnectMinMs: 5000, reconnectMaxMs: 10000 }],
  })
  cleanups.push(() => g.cleanup())
  const sims = ['t1', 't2', 't3'].map((d) => simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, d, { window: 16 }))
  await waitFor('load running', () => sims.every((s) => s.acked.size > 200), 15000)
  const t0 = Date.now()
  const code = await g.stop()
  const tookMs = Date.now() - t0
  for (const s of sims) await s.stop()
  assert.equal(code, 0)
  assert.ok(tookMs < 5000, `shutdown took ${tookMs} ms`)
  await g.waitLog((l) => l.msg === 'stopped')
  const store = new OutboxStore({ file: join(g.dataDir, 'outbox.db'), gatewayId: 'test-gw', upstreams: ['offline'], maxBytes: 1e12, maxAgeMs: 1e12 })
  store.open()
  const rows = store.claim('offline', 10_000_000)
  store.close()
  const have = new Set(rows.map((r) => `${r.device}#${r.deviceSeq}`))
  const missing = sims.flatMap((s) => [...s.acked].filter((n) => !have.has(`${s.id}#${n}`)).map((n) => `${s.id}#${n}`))
  assert.deepEqual(missing, [])
})
