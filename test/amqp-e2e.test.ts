// AMQP 1.0 upstream end to end against a real RabbitMQ: devices -> gateway -> outbox -> amqp upstream -> queue -> consumer.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { amqpConsumer } from './helpers/amqp.ts'
import { simulateDevice, audit } from './helpers/load.ts'
import { waitFor } from './helpers/net.ts'

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
