// The gateway lifecycle on the status address (bridges/amqp/lifecycle.ts) against a real RabbitMQ: birth when the
// link comes up (again), heartbeats with the device list, presence as devices come and go, an alert, death on a clean
// stop and a new bootId after the restart. Every message received is validated against bridges/amqp/status.schema.json.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createServer, connect as tcpConnect, type Socket } from 'node:net'
import { join } from 'node:path'
import type { Message } from 'rhea'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { startGatewayProc, addDevice, ROOT, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { connectAmqp, bodyJson } from './helpers/amqp.ts'
import { connect, end, type MqttClient } from './helpers/mqtt.ts'
import { freePort, waitFor } from './helpers/net.ts'
import { configDigest } from '../bridges/amqp/lifecycle.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

const schema = JSON.parse(readFileSync(join(ROOT, 'bridges/amqp/status.schema.json'), 'utf8')) as object
const ajv = new Ajv2020({ allErrors: true, strict: true })
// The one format used; ajv-formats would be a second dependency for a single regex.
ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/)
const validate = ajv.compile(schema)
function assertValid(b: unknown, what: string): void {
  assert.ok(validate(b), `${what} does not match status.schema.json: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(b)}`)
}

let rmq: RabbitMq
/** The gateway reaches RabbitMQ through this: cut() drops its link without touching the test's consumer. */
let proxy: { port: number; cut(): void }
let g: GatewayProc
let secret: string
const got: Message[] = []
type Body = Record<string, unknown> & { kind: string; bootId: string; at: string }
const ofKind = (kind: string, from = 0): { m: Message; b: Body }[] => got.slice(from).map((m) => ({ m, b: bodyJson(m) as Body })).filter((x) => x.b.kind === kind)

before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
  proxy = await tcpProxy(rmq.port)
  // The fleet side: a queue bound to amq.topic with the gateway's status key, there before the gateway starts.
  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const rcv = conn.open_receiver({ source: { address: '/exchange/amq.topic/status.test-gw' }, autoaccept: true, credit_window: 100 })
  rcv.on('message', (ctx) => { got.push(ctx.message!) })
  await new Promise<void>((resolve) => rcv.once('receiver_open', () => resolve()))
  g = await startGatewayProc({
    alerts: { offlineHoldSeconds: 1 },
    upstreams: [{ name: 'cloud', type: 'amqp', host: '127.0.0.1', port: proxy.port, username: 'guest', password: 'guest', address: '/queue/tele', statusAddress: '/exchange/amq.topic/status.{gateway}', heartbeatSeconds: 1, reconnectMinMs: 100, reconnectMaxMs: 500 }],
  }, { start: false })
  cleanups.push(() => g.cleanup())
  secret = await addDevice(g, 'sensor-1')
  await g.start()
})

test('birth first when the link comes up, then heartbeats with the device list; schema 1 in properties and body', async () => {
  const birth = await waitFor('a birth', () => ofKind('birth')[0], 15000)
  assert.equal(got[0], birth.m, 'birth is the first message on the status address')
  assert.equal(birth.m.subject, 'birth')
  assert.equal(birth.m.content_type, 'application/json')
  assert.deepEqual(birth.m.application_properties, { gateway: 'test-gw', kind: 'birth', schema: 1 })
  assert.equal(birth.m.ttl, 3000)
  const b = birth.b
  assert.equal(b.schema, 1)
  assert.equal(b.gateway, 'test-gw')
  assert.match(String(b.version), /^\d+\.\d+\.\d+/)
  assert.match(String(b.configDigest), /^[0-9a-f]{16}$/)
  assert.equal(b.heartbeatSeconds, 1)
  assert.equal(b.ttlSeconds, 3)
  assert.deepEqual(b.devices, [{ id: 'sensor-1', online: false, link: null, firmware: null, lastSeen: null }])
  assertValid(b, 'birth')

  const hb = await waitFor('two heartbeats', () => ofKind('status').length >= 2 && ofKind('status'), 10000)
  for (const h of hb) {
    assert.deepEqual(h.m.application_properties, { gateway: 'test-gw', kind: 'status', schema: 1 })
    assert.equal(h.m.ttl, 3000)
    assert.equal(h.b.bootId, b.bootId)
    assert.equal(h.b.ttlSeconds, 3)
    assert.equal(h.b.devicesTotal, 1)
    assert.equal(h.b.devicesOnline, 0)
    assert.deepEqual(h.b.devices, [{ id: 'sensor-1', online: false }])
    assert.deepEqual((h.b.upstreams as { name: string; connected: boolean }[]).map((u) => [u.name, u.connected]), [['cloud', true]])
    assert.equal(typeof (h.b.backlog as { depth: number }).depth, 'number')
    assertValid(h.b, 'status')
  }
})

test('presence as a device comes and goes, an alert when it stays away, all in the schema', async () => {
  const from = got.length
  const dev: MqttClient = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'sensor-1', username: 'sensor-1', password: secret })
  await dev.publishAsync('devices/sensor-1/state', JSON.stringify({ firmware: '1.4.2' }), { qos: 1 })
  const on = await waitFor('presence online', () => ofKind('presence', from).find((x) => x.b.online === true), 10000)
  assert.deepEqual(on.m.application_properties, { gateway: 'test-gw', kind: 'presence', schema: 1 })
  assert.equal(on.b.device, 'sensor-1')
  assert.equal(on.b.link, 'mqtt')
  assertValid(on.b, 'presence online')
  const hb = await waitFor('a heartbeat with sensor-1 online', () => ofKind('status', from).find((x) => (x.b.devices as { online: boolean }[])[0]?.online), 10000)
  assert.equal(hb.b.devicesOnline, 1)

  dev.stream.destroy()
  const off = await waitFor('presence offline', () => ofKind('presence', from).find((x) => x.b.online === false), 10000)
  assert.equal(off.b.device, 'sensor-1')
  assert.equal(typeof off.b.reason, 'string')
  assertValid(off.b, 'presence offline')
  const alert = await waitFor('the offline alert', () => ofKind('alert', from).find((x) => x.b.event === 'raised'), 15000)
  assert.equal(alert.m.application_properties?.schema, 1)
  assert.equal(alert.b.bootId, on.b.bootId)
  assertValid(alert.b, 'alert')
  const withAlert = await waitFor('a heartbeat listing the alert', () => ofKind('status', got.indexOf(alert.m)).find((x) => (x.b.alerts as unknown[]).length === 1), 10000)
  assertValid(withAlert.b, 'status with an alert')
})

test('the link comes up again: a new birth (same bootId) with what is known of the device now', async () => {
  const first = ofKind('birth')[0]!.b
  const from = got.length
  proxy.cut()
  const again = await waitFor('a second birth', () => ofKind('birth', from)[0], 20000)
  assert.equal(again.b.bootId, first.bootId, 'same process')
  assert.equal(again.b.configDigest, first.configDigest)
  const [d] = again.b.devices as { id: string; online: boolean; link: string | null; firmware: string | null; lastSeen: string | null }[]
  assert.equal(d!.id, 'sensor-1')
  assert.equal(d!.online, false)
  assert.equal(d!.link, 'mqtt')
  assert.equal(d!.firmware, '1.4.2')
  assert.ok(d!.lastSeen && Math.abs(Date.parse(d!.lastSeen) - Date.now()) < 120_000, `lastSeen ${d!.lastSeen}`)
  assertValid(again.b, 'birth after reconnect')
})

test('a clean stop says death before the link closes; the restart is a birth with a new bootId', async () => {
  const before = ofKind('birth').at(-1)!.b
  const from = got.length
  assert.equal(await g.stop(), 0)
  const death = await waitFor('death', () => ofKind('death', from)[0], 10000)
  assert.deepEqual(death.m.application_properties, { gateway: 'test-gw', kind: 'death', schema: 1 })
  assert.equal(death.b.reason, 'shutdown')
  assert.equal(death.b.bootId, before.bootId)
  assert.equal(got.at(-1), death.m, 'death is the last message of the process')
  assertValid(death.b, 'death')

  const from2 = got.length
  await g.start()
  const birth = await waitFor('birth after restart', () => ofKind('birth', from2)[0], 15000)
  assert.equal(got[from2], birth.m, 'birth is the first message after the restart')
  assert.notEqual(birth.b.bootId, before.bootId, 'a restart has a new bootId')
  assert.equal(birth.b.configDigest, before.configDigest, 'same config, same digest')
  assertValid(birth.b, 'birth after restart')
})

test('configDigest: 16 hex, ignores credentials and key order, changes with the config', () => {
  const a = configDigest({ gateway: { id: 'g' }, upstreams: [{ name: 'c', host: 'h', password: 'one' }] })
  assert.match(a, /^[0-9a-f]{16}$/)
  assert.equal(configDigest({ upstreams: [{ password: 'two', host: 'h', name: 'c' }], gateway: { id: 'g' } }), a)
  assert.notEqual(configDigest({ gateway: { id: 'g' }, upstreams: [{ name: 'c', host: 'other', password: 'one' }] }), a)
})

test('the schema rejects what breaks the contract (the validator is not a rubber stamp)', () => {
  const birth = ofKind('birth')[0]!.b
  assert.ok(validate(birth))
  const { devices: _d, ...noDevices } = birth
  assert.equal(validate(noDevices), false)
  assert.equal(validate({ ...birth, schema: 2 }), false)
  assert.equal(validate({ ...birth, kind: 'rebirth' }), false)
  assert.equal(validate({ ...birth, configDigest: 'xyz' }), false)
  assert.equal(validate({ ...ofKind('death')[0]!.b, reason: 'crash' }), false)
})

async function tcpProxy(to: number): Promise<{ port: number; cut(): void }> {
  const port = await freePort()
  const open = new Set<Socket>()
  const server = createServer((a) => {
    const b = tcpConnect(to, '127.0.0.1')
    for (const s of [a, b]) { open.add(s); s.on('close', () => open.delete(s)); s.on('error', () => undefined) }
    a.pipe(b).pipe(a)
    a.on('close', () => b.destroy())
    b.on('close', () => a.destroy())
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  cleanups.push(() => new Promise<void>((resolve) => { for (const s of open) s.destroy(); server.close(() => resolve()) }))
  return { port, cut: () => { for (const s of open) s.destroy() } }
}
