// Alerts on the AMQP status address against a real RabbitMQ: a device offline past its hold time is published as a
// `kind: "alert"` message when raised and again when cleared, and the heartbeat carries the active alerts.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import type { Message } from 'rhea'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { connectAmqp, bodyJson } from './helpers/amqp.ts'
import { connect, end, type MqttClient } from './helpers/mqtt.ts'
import { waitFor } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

const HOLD_S = 2
let rmq: RabbitMq
let g: GatewayProc
const got: Message[] = []

interface AlertBody { gateway: string; kind: string; event: string; at: string; text: string; alert: { id: string; rule: string; severity: string; since: string; text: string; device?: string } }

before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
  g = await startGatewayProc({
    alerts: { offlineHoldSeconds: HOLD_S },
    upstreams: [{ name: 'cloud', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'guest', password: 'guest', address: '/queue/tele', statusAddress: '/queue/status.{gateway}', heartbeatSeconds: 1, reconnectMinMs: 100, reconnectMaxMs: 500 }],
  })
  cleanups.push(() => g.cleanup())
  await g.waitLog((l) => l.msg === 'upstream connected', 10000)
  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const rcv = conn.open_receiver({ source: { address: '/queue/status.test-gw', durable: 1 }, autoaccept: true })
  rcv.on('message', (ctx) => { got.push(ctx.message!) })
  await waitFor('a first heartbeat', () => got.length > 0, 10000)
})

const alerts = (): { m: Message; b: AlertBody }[] => got.filter((m) => m.subject === 'alert').map((m) => ({ m, b: bodyJson(m) as unknown as AlertBody }))
const heartbeats = (): { m: Message; b: { alerts: { id: string; text: string }[] } }[] => got.filter((m) => m.subject === 'status').map((m) => ({ m, b: bodyJson(m) as unknown as { alerts: { id: string; text: string }[] } }))

test('a device offline past the hold time: an "alert" message on the status address when raised and when cleared; the heartbeat lists it', async () => {
  const secret = await addDevice(g, 'amqp-dev')
  const dev: MqttClient = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'amqp-dev', username: 'amqp-dev', password: secret })
  const t0 = Date.now()
  dev.stream.destroy()
  const raised = await waitFor('alert raised message', () => alerts().find((a) => a.b.event === 'raised'), HOLD_S * 1000 + 10000, 50)
  assert.ok(Date.now() - t0 >= HOLD_S * 1000 - 100, 'not before the hold time')
  assert.deepEqual(raised.m.application_properties, { gateway: 'test-gw', kind: 'alert', schema: 1, event: 'raised', alert: 'device_offline:amqp-dev', rule: 'device_offline', severity: 'warning' })
  assert.equal(raised.m.content_type, 'application/json')
  assert.equal(raised.b.kind, 'alert')
  assert.equal(raised.b.gateway, 'test-gw')
  assert.equal(raised.b.alert.id, 'device_offline:amqp-dev')
  assert.equal(raised.b.alert.device, 'amqp-dev')
  assert.match(raised.b.text, /^amqp-dev went offline \(/)
  assert.equal(raised.b.alert.text, raised.b.text)
  assert.ok(Math.abs(Date.parse(raised.b.alert.since) - t0) < 3000)
  // The next heartbeat carries the active alert.
  const hbFrom = got.length
  const hb = await waitFor('heartbeat with the alert', () => heartbeats().find((h) => got.indexOf(h.m) >= hbFrom && h.b.alerts.some((a) => a.id === 'device_offline:amqp-dev')), 5000, 50)
  assert.equal(hb.b.alerts.length, 1)

  const back = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'amqp-dev', username: 'amqp-dev', password: secret })
  cleanups.push(() => end(back))
  const cleared = await waitFor('alert cleared message', () => alerts().find((a) => a.b.event === 'cleared'), HOLD_S * 1000 + 10000, 50)
  assert.equal(cleared.b.alert.id, 'device_offline:amqp-dev')
  assert.equal(cleared.b.text, 'amqp-dev is back online')
  assert.equal(cleared.m.application_properties?.event, 'cleared')
  assert.notEqual(cleared.m.message_id, raised.m.message_id)
  const hbFrom2 = got.length
  await waitFor('heartbeat without alerts', () => heartbeats().find((h) => got.indexOf(h.m) >= hbFrom2 && h.b.alerts.length === 0), 5000, 50)
  assert.equal(alerts().length, 2, 'one message per transition')
})
