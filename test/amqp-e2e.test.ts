// AMQP 1.0 upstream end to end against a real RabbitMQ: devices -> gateway -> outbox -> amqp upstream -> queue -> consumer.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { amqpConsumer } from './helpers/amqp.ts'
import { connect, endClient } from './helpers/mqtt.ts'
import { simulateDevice, audit, type DeviceSim } from './helpers/load.ts'
import { waitFor, freePort, pause } from './helpers/net.ts'
import { readDeadLetters } from '../gateway/outbox/store.ts'
import { deliveryReport, formatReport } from './helpers/report.ts'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse, stringify } from 'yaml'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

let rmq: RabbitMq
before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
})

function amqpUpstreamConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'cloud', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'guest', password: 'guest', reconnectMinMs: 100, reconnectMaxMs: 1000, maxInflight: 100, ...extra }
}

async function gateway(extra: Record<string, unknown> = {}): Promise<GatewayProc> {
  const g = await startGatewayProc({ mqtt: { openBroker: true }, upstreams: [amqpUpstreamConfig(extra)] })
  cleanups.push(() => g.cleanup())
  return g
}

test('end to end: every acked reading arrives once, with the expected AMQP properties', async () => {
  const queue = '/queue/e2e'
  const consumer = await amqpConsumer(rmq.port, queue)
  cleanups.push(() => consumer.close())
  const g = await gateway({ address: queue })
  await g.waitLog((l) => l.msg === 'upstream connected', 10000)
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const sims = ['e1', 'e2', 'e3'].map((d) => simulateDevice(url, d, { window: 8, max: 300 }))
  await waitFor('all acked', () => sims.every((s) => s.acked.size === 300), 30000)
  await waitFor('all delivered', () => audit(sims, consumer.got).missing.length === 0, 30000, 100).catch(() => undefined)
  const report = audit(sims, consumer.got)
  assert.deepEqual(report.missing, [])
  assert.deepEqual(report.outOfOrder, [])
  assert.equal(report.duplicates, 0)
  assert.equal(consumer.got.length, 900)
  const m = consumer.messages.find((x) => x.body.device === 'e2' && x.body.deviceSeq === 5)!
  assert.ok(m, 'e2 #5 received')
  const seq = m.body.seq as number
  assert.equal(m.message.message_id, `test-gw:e2:${seq}`)
  assert.equal(m.message.subject, 'e2')
  assert.equal(m.message.to, queue)
  assert.equal(m.message.content_type, 'application/json')
  assert.equal(m.message.durable, true)
  assert.ok(m.message.creation_time instanceof Date && Math.abs(m.message.creation_time.getTime() - Date.now()) < 60000)
  assert.deepEqual(m.message.application_properties, { gateway: 'test-gw', device: 'e2', seq, link: 'mqtt', deviceSeq: 5 })
  assert.deepEqual(m.body.metrics, { v: 5 })
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 20000)
  assert.equal(await g.metric('edgeway_upstream_connected', { upstream: 'cloud' }), 1)
  for (const s of sims) await s.stop()
})

test('broker outage (RabbitMQ stopped and restarted twice mid-stream): 0 lost, per-device order kept, duplicates bounded', async (t) => {
  const queue = '/queue/outage'
  const maxInflight = 100
  const consumer = await amqpConsumer(rmq.port, queue, { reconnect: true })
  cleanups.push(() => consumer.close())
  const g = await gateway({ address: queue, maxInflight })
  await g.waitLog((l) => l.msg === 'upstream connected', 10000)
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  // Paced (~300 readings/s each): unpaced devices would fill the outbox at ~20k/s during the outages, and the drain
  // would starve the test files running in parallel.
  const sims = ['o1', 'o2', 'o3'].map((d) => simulateDevice(url, d, { window: 1, intervalMs: 3 }))
  for (let round = 0; round < 2; round++) {
    const before = consumer.got.length
    await waitFor('forwarding mid-stream', () => consumer.got.length > before + 300, 20000).catch(async (e: Error) => {
      throw new Error(`${e.message} (round ${round}, consumer has ${consumer.got.length}, consumer open ${consumer.conn.is_open()}); gateway ${JSON.stringify(await g.health())}\n${g.logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`)
    })
    await rmq.stop('SIGTERM')
    await waitFor('upstream seen down', async () => (await g.health()).upstreams[0]?.connected === false, 10000)
    const acked = sims.reduce((n, s) => n + s.acked.size, 0)
    await waitFor('devices still acked while the broker is away', () => sims.reduce((n, s) => n + s.acked.size, 0) > acked + 200, 10000)
    const h = await g.health()
    assert.ok(h.reasons.some((r) => /upstream "cloud" down/.test(r)), h.reasons.join('; '))
    await rmq.start()
    await g.waitLog((l) => l.msg === 'upstream connected' && (g.logs.filter((x) => x.msg === 'upstream connected').length >= round + 2), 20000)
  }
  for (const s of sims) await s.stop()
  await waitFor('every acked reading delivered', () => audit(sims, consumer.got).missing.length === 0, 60000, 200).catch(() => undefined)
  const report = audit(sims, consumer.got)
  const acked = sims.reduce((n, s) => n + s.acked.size, 0)
  assert.ok(acked > 1000, `enough load: ${acked}`)
  if (report.missing.length) {
    // Say where it stopped: the gateway's view of its upstream and backlog, the consumer's link, the last log lines.
    const h = await g.health().catch((e: Error) => e.message)
    assert.fail(`missing ${report.missing.length} of ${acked} (first ${report.missing.slice(0, 5).join(', ')}); consumer got ${consumer.got.length}, open ${consumer.conn.is_open()}; gateway ${JSON.stringify(h)}\n${g.logs.slice(-12).map((l) => JSON.stringify(l)).join('\n')}`)
  }
  assert.deepEqual(report.outOfOrder.slice(0, 20), [])
  // Resent after each outage: at most what was unsettled (maxInflight), plus what the consumer had not yet acked.
  assert.ok(report.duplicates <= 2 * (maxInflight + 500), `duplicates ${report.duplicates}`)
  const dr = deliveryReport(sims, consumer.got)
  t.diagnostic(formatReport(dr))
  assert.equal(dr.lost, 0)
  assert.equal(dr.outOfOrder, 0)
  assert.ok(dr.delivered >= dr.acked && dr.delivered <= dr.sent, formatReport(dr))
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 20000)
  await waitFor('healthy again', async () => (await g.health()).status === 'ok', 20000)
})

test('gateway SIGKILL while forwarding: after the restart every acked reading arrives (2 rounds)', async (t) => {
  const queue = '/queue/kill'
  const consumer = await amqpConsumer(rmq.port, queue)
  cleanups.push(() => consumer.close())
  const g = await gateway({ address: queue })
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const all: DeviceSim[] = []
  const next = new Map(['k1', 'k2', 'k3'].map((d) => [d, 0]))
  for (let round = 0; round < 2; round++) {
    const sims = [...next.keys()].map((d) => simulateDevice(url, d, { window: 16, startSeq: next.get(d)! }))
    all.push(...sims)
    await waitFor('load running', () => sims.every((s) => s.acked.size > 100), 15000)
    await pause(200)
    await g.kill()
    for (const s of sims) { await s.stop(); next.set(s.id, next.get(s.id)! + s.sent) }
    await g.start()
  }
  await waitFor('every acked reading delivered', () => audit(all, consumer.got).missing.length === 0, 60000, 200).catch(() => undefined)
  const report = audit(all, consumer.got)
  assert.deepEqual(report.missing.slice(0, 20), [], `missing ${report.missing.length}`)
  assert.deepEqual(report.outOfOrder.slice(0, 20), [])
  t.diagnostic(formatReport(deliveryReport(all, consumer.got)))
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 20000)
})

test('a reading over max-message-size is dead-lettered with the reason; the rest keep flowing', async () => {
  const queue = '/queue/size'
  const consumer = await amqpConsumer(rmq.port, queue)
  cleanups.push(() => consumer.close())
  const g = await gateway({ address: queue, maxMessageBytes: 1024 })
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const small = simulateDevice(url, 's1', { max: 20 })
  const big = simulateDevice(url, 'b1', { max: 3, payloadPad: 2000 })
  await waitFor('all acked', () => small.acked.size === 20 && big.acked.size === 3, 10000)
  await waitFor('small ones delivered', () => audit([small], consumer.got).missing.length === 0, 10000)
  await waitFor('dead-lettered', async () => (await g.health() as unknown as { outbox: { deadLettered: number } }).outbox.deadLettered === 3, 10000)
  const dead = readDeadLetters(join(g.dataDir, 'outbox.db'))
  assert.deepEqual(dead.map((d) => [d.upstream, d.device, d.deviceSeq]), [['cloud', 'b1', 0], ['cloud', 'b1', 1], ['cloud', 'b1', 2]])
  assert.match(dead[0]!.reason, /message of \d+ bytes exceeds max-message-size 1024/)
  assert.equal(consumer.got.filter((r) => r.device === 'b1').length, 0)
  assert.equal(g.logs.filter((l) => l.msg.includes('dead-letter')).length, 3)
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 10000)
  await small.stop(); await big.stop()
})

test('a full reject-publish queue (RabbitMQ 3.10 resets the connection on such a publish): no reading is dead-lettered for it, and all arrive once the queue has room', async () => {
  // Every publish past the limit ends the connection, whichever reading it is: the forwarder's search for the one
  // reading that drops the link must acquit them all, not dead-letter them one by one.
  const policy = await rmq.ctl(['set_policy', 'rp-full', '^rp-full$', '{"max-length":3,"overflow":"reject-publish"}', '--apply-to', 'queues'])
  assert.equal(policy.code, 0, policy.out)
  const queue = '/queue/rp-full'
  const g = await gateway({ address: queue, reconnectMinMs: 50, reconnectMaxMs: 200 })
  await g.waitLog((l) => l.msg === 'upstream connected', 10000)
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 'rp1', { max: 10 })
  await waitFor('all acked', () => sim.acked.size === 10, 10000)
  const said = await g.waitLog((l) => l.msg.startsWith('the upstream dropped the link with other readings alone in flight too'), 30000)
  assert.equal(said.level, 40)
  await pause(500)
  assert.equal((await g.health() as unknown as { outbox: { deadLettered: number } }).outbox.deadLettered, 0, 'nothing dead-lettered while the queue was full')
  const cleared = await rmq.ctl(['clear_policy', 'rp-full'])
  assert.equal(cleared.code, 0, cleared.out)
  const consumer = await amqpConsumer(rmq.port, queue)
  cleanups.push(() => consumer.close())
  await waitFor('every reading delivered once the queue has room', () => audit([sim], consumer.got).missing.length === 0, 30000, 100).catch(() => undefined)
  assert.deepEqual(audit([sim], consumer.got).missing, [])
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 20000)
  assert.deepEqual(readDeadLetters(join(g.dataDir, 'outbox.db')), [])
  await sim.stop()
})

test('wrong credentials, wrong port, TLS to a plain port: a clear log line, backoff, no crash; nothing lost once fixed', async () => {
  const queue = '/queue/creds'
  const consumer = await amqpConsumer(rmq.port, queue)
  cleanups.push(() => consumer.close())
  const g = await gateway({ address: queue, password: 'wrong', reconnectMinMs: 200, reconnectMaxMs: 400 })
  const line = await g.waitLog((l) => l.msg.startsWith('upstream connect failed'), 10000)
  assert.equal(line.level, 50, 'logged as an error')
  assert.match(String(line.err), /unauthori[sz]ed|auth|credentials|PLAIN/i)
  assert.equal(typeof line.retryInMs, 'number')
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const sim = simulateDevice(url, 'c1', { max: 50 })
  await waitFor('acked while the upstream is refused', () => sim.acked.size === 50, 10000)
  await pause(1500) // several backoff rounds
  assert.equal(g.proc.exitCode, null, 'still running')
  const h = await g.health()
  assert.equal(h.upstreams[0]!.connected, false)
  assert.ok(h.reasons.some((r) => /upstream "cloud" down.*unauthori/i.test(r)), h.reasons.join('; '))
  assert.equal(g.logs.filter((l) => l.msg.startsWith('upstream connect failed')).length, 1, 'one error line per outage, not one per retry')
  // Wrong port next: refused connections, same behaviour.
  await g.stop()
  const freeP = await freePort()
  rewriteUpstream(g, { password: 'guest', port: freeP })
  await g.start()
  const refused = await g.waitLog((l) => l.msg.startsWith('upstream connect failed'), 10000)
  assert.match(String(refused.err), /ECONNREFUSED/)
  await pause(1000)
  assert.equal(g.proc.exitCode, null, 'still running')
  // TLS against a plain AMQP port: the handshake fails, same behaviour.
  await g.stop()
  rewriteUpstream(g, { port: rmq.port, tls: { rejectUnauthorized: true } })
  await g.start()
  const tlsFail = await g.waitLog((l) => l.msg.startsWith('upstream connect failed'), 10000)
  assert.match(String(tlsFail.err), /SSL|TLS|EPROTO|wrong version|socket disconnected|ECONNRESET/i)
  await pause(1000)
  assert.equal(g.proc.exitCode, null, 'still running')
  // Fixed: everything acked earlier arrives.
  await g.stop()
  rewriteUpstream(g, { port: rmq.port, tls: undefined })
  await g.start()
  await waitFor('delivered after the fix', () => audit([sim], consumer.got).missing.length === 0, 20000, 100)
  await sim.stop()
})

function rewriteUpstream(g: GatewayProc, patch: Record<string, unknown>): void {
  const cfg = parse(readFileSync(g.configFile, 'utf8')) as { upstreams: Record<string, unknown>[] }
  Object.assign(cfg.upstreams[0]!, patch)
  for (const [k, v] of Object.entries(patch)) if (v === undefined) delete cfg.upstreams[0]![k]
  writeFileSync(g.configFile, stringify(cfg))
}

test('priority lane: an alarm stored behind a backlog goes out first when the broker returns, with AMQP priority 9', async () => {
  const queue = '/queue/prio'
  const consumer = await amqpConsumer(rmq.port, queue, { reconnect: true })
  cleanups.push(() => consumer.close())
  const g = await startGatewayProc({ mqtt: { openBroker: true }, outbox: { priority: { metrics: ['alarm'] } }, upstreams: [amqpUpstreamConfig({ address: queue, maxInflight: 20 })] })
  cleanups.push(() => g.cleanup())
  await g.waitLog((l) => l.msg === 'upstream connected', 10000)
  await rmq.stop('SIGTERM')
  await waitFor('upstream seen down', async () => (await g.health()).upstreams[0]?.connected === false, 10000)
  const url = `mqtt://127.0.0.1:${g.mqttPort}`
  const routine = simulateDevice(url, 'p1', { window: 32, max: 2000 })
  await waitFor('backlog stored', () => routine.acked.size === 2000, 30000)
  await routine.stop()
  const alarmDev = await connect(url, { clientId: 'p2' })
  await alarmDev.publishAsync('devices/p2/telemetry', JSON.stringify({ alarm: true, level: 3 }), { qos: 1 })
  await alarmDev.publishAsync('devices/p2/telemetry', JSON.stringify({ level: 0 }), { qos: 1 })
  await endClient(alarmDev)
  await rmq.start()
  await waitFor('all delivered', () => consumer.got.length >= 2002, 60000, 100)
  const order = consumer.messages.map((m) => m.body as { device: string; metrics?: Record<string, unknown> })
  const alarmAt = order.findIndex((b) => b.device === 'p2' && b.metrics?.alarm === true)
  const calmAt = order.findIndex((b) => b.device === 'p2' && b.metrics?.level === 0)
  assert.ok(alarmAt >= 0 && alarmAt < 20, `the alarm is in the first claim after the outage (at ${alarmAt})`)
  assert.ok(calmAt > 1000, `routine readings keep row order behind the backlog (p2's next reading at ${calmAt})`)
  assert.equal(consumer.messages[alarmAt]!.message.priority, 9)
  assert.equal(consumer.messages[calmAt]!.message.priority ?? 4, 4, 'routine readings keep the default priority')
  const report = audit([routine], consumer.got)
  assert.deepEqual(report.missing, [])
  assert.deepEqual(report.outOfOrder, [], 'each lane keeps per-device order')
})
