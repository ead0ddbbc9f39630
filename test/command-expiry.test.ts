// Commands for a device that is offline with a persistent session (issue 13): queued with the command's deadline as
// its MQTT 5 Message Expiry Interval; the sender gets `expired` when the device does not come back in time (and the
// device, back later, never receives it), the device's answer when it comes back in time (with the remaining
// expiry), `timeout` when it had the command and did not answer; across a gateway restart the queued command keeps
// its deadline (broker.db). Real peers: RabbitMQ (AMQP commands with reply_to), the gateway as a child process, an
// MQTT.js 5 device; the dashboard's device API for a command without a TTL (the router's 30 s).
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import mqtt, { type IPublishPacket, type MqttClient, type IConnackPacket } from 'mqtt'
import rhea, { type Message } from 'rhea'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { connectAmqp, amqpSender, bodyJson } from './helpers/amqp.ts'
import { httpRequest } from './helpers/http-raw.ts'
import { waitFor, scaled } from './helpers/net.ts'
import { end } from './helpers/mqtt.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

let rmq: RabbitMq
let g: GatewayProc
let send: (m: Message) => void
const replies = new Map<string, { at: number; body: Record<string, unknown> }>()
const secrets: Record<string, string> = {}

before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
  g = await startGatewayProc({
    upstreams: [{ name: 'cloud', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'guest', password: 'guest', address: '/queue/tele', commandAddress: '/queue/cmd.{gateway}', reconnectMinMs: 100, reconnectMaxMs: 500 }],
  })
  cleanups.push(() => g.cleanup())
  await g.waitLog((l) => l.msg === 'upstream connected', 10000)
  for (const d of ['exp-a', 'exp-b', 'exp-c', 'exp-d', 'exp-e']) secrets[d] = await addDevice(g, d)
  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const rcv = conn.open_receiver({ source: { address: '/queue/exp-replies', durable: 1 }, autoaccept: true })
  rcv.on('message', (ctx) => { replies.set(String(ctx.message!.correlation_id), { at: Date.now(), body: bodyJson(ctx.message!) }) })
  await new Promise<void>((resolve) => rcv.once('receiver_open', () => resolve()))
  await waitFor('gateway command link attached', async () => /1/.test((await rmq.ctl(['list_queues', 'name', 'consumers'])).out.split('\n').find((l) => l.startsWith('cmd.test-gw')) ?? ''), 10000)
  const s = await amqpSender(conn, '/queue/cmd.test-gw')
  send = (m) => { void s.send({ reply_to: '/queue/exp-replies', ...m }) }
})

/** The device with a persistent MQTT 5 session (Clean Start 0, 5 min Session Expiry), collecting what it receives. */
async function connectDevice(id: string, got: IPublishPacket[], answer = true): Promise<{ c: MqttClient; connack: IConnackPacket }> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${g.mqttPort}`, { reconnectPeriod: 0, connectTimeout: scaled(5000), protocolVersion: 5, clientId: id, username: id, password: secrets[id]!, clean: false, properties: { sessionExpiryInterval: 300 } })
  c.on('message', (_topic, _payload, packet) => {
    got.push(packet)
    const cmd = JSON.parse(packet.payload.toString()) as { id: string; args: unknown }
    if (answer) c.publish(`${packet.topic}/result`, JSON.stringify({ id: cmd.id, result: { echo: cmd.args } }), { qos: 1 })
  })
  const connack = await new Promise<IConnackPacket>((resolve, reject) => { c.once('connect', resolve); c.once('error', reject) })
  cleanups.push(() => end(c))
  return { c, connack }
}

/** Subscribes once to its commands, then goes away: the session (and its subscription) stays on the gateway. */
async function leaveWithSession(id: string): Promise<void> {
  const { c } = await connectDevice(id, [])
  await c.subscribeAsync(`devices/${id}/cmd/+`, { qos: 1 })
  const gone = g.logs.filter((l) => l.msg === 'mqtt client disconnected' && l.clientId === id).length
  await c.endAsync()
  await waitFor(`${id} offline`, () => g.logs.filter((l) => l.msg === 'mqtt client disconnected' && l.clientId === id).length > gone || undefined, 10000)
}

const body = (o: unknown): Message['body'] => rhea.message.data_section(Buffer.from(JSON.stringify(o)))
const reply = (id: string, ms = 30000) => waitFor(`reply ${id}`, () => replies.get(id), ms)

test('offline past its TTL: the sender gets `expired` (not offline, not timeout), and the device back later never receives it', async () => {
  await leaveWithSession('exp-a')
  const ttl = scaled(2000)
  const sentAt = Date.now()
  send({ message_id: 'a1', subject: 'exp-a/relay', body: body({ on: true }), ttl })
  const r = await reply('a1')
  assert.equal(r.body.ok, false)
  assert.equal(r.body.code, 'expired', JSON.stringify(r.body))
  assert.ok(r.at - sentAt >= ttl - 250, `answered when the TTL ran out (${r.at - sentAt} ms of ${ttl})`)
  const got: IPublishPacket[] = []
  const { c, connack } = await connectDevice('exp-a', got)
  assert.equal(connack.sessionPresent, true, 'the session held it')
  await new Promise((res) => setTimeout(res, scaled(1500)))
  assert.deepEqual(got.map((p) => p.topic), [], 'the expired command is not delivered')
  await end(c)
})

test('back in time: the queued command arrives with what is left of its expiry, and the device\'s answer reaches the sender', async () => {
  await leaveWithSession('exp-b')
  const ttl = scaled(20000)
  send({ message_id: 'b1', subject: 'exp-b/relay', body: body({ on: 1 }), ttl })
  await new Promise((res) => setTimeout(res, scaled(2500)))
  assert.equal(replies.has('b1'), false, 'no result while the device is away')
  const got: IPublishPacket[] = []
  const { c } = await connectDevice('exp-b', got)
  const r = await reply('b1')
  assert.deepEqual(r.body, { ok: true, result: { echo: { on: 1 } } })
  assert.equal(got.length, 1)
  const left = got[0]!.properties?.messageExpiryInterval ?? 0
  assert.ok(left > 0 && left <= Math.ceil(ttl / 1000) - 2, `remaining expiry ${left} s of ${ttl / 1000} s`)
  await end(c)
})

test('back in time but no answer: `timeout`, not `expired` (the device had it)', async () => {
  await leaveWithSession('exp-c')
  const ttl = scaled(4000)
  send({ message_id: 'c1', subject: 'exp-c/relay', body: body({}), ttl })
  await new Promise((res) => setTimeout(res, scaled(1000)))
  const got: IPublishPacket[] = []
  const { c } = await connectDevice('exp-c', got, false)
  await waitFor('the command delivered', () => got.length === 1 || undefined, 10000)
  const r = await reply('c1')
  assert.equal(r.body.code, 'timeout', JSON.stringify(r.body))
  await end(c)
  // a device with no session to hold it is still told offline at once
  send({ message_id: 'c2', subject: 'exp-e/relay', body: body({}), ttl })
  assert.equal((await reply('c2', 10000)).body.code, 'offline')
})

test('the dashboard\'s device API (no TTL: the router\'s 30 s): queued for the offline device, `expired` at the deadline, never delivered after', { timeout: scaled(120000) }, async () => {
  await leaveWithSession('exp-d')
  const sentAt = Date.now()
  const r = await httpRequest(`http://127.0.0.1:${g.httpPort}/api/devices/exp-d/commands`, {
    method: 'POST', headers: { origin: `http://127.0.0.1:${g.httpPort}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'relay', args: { on: false } }),
  })
  assert.equal(r.status, 200, r.body)
  const result = JSON.parse(r.body) as { ok: boolean; code?: string; error?: string }
  assert.equal(result.code, 'expired', r.body)
  assert.ok(Date.now() - sentAt >= 29000, `at the router's deadline (${Date.now() - sentAt} ms)`)
  const got: IPublishPacket[] = []
  const { c, connack } = await connectDevice('exp-d', got)
  assert.equal(connack.sessionPresent, true)
  await new Promise((res) => setTimeout(res, scaled(2500)))
  assert.deepEqual(got.map((p) => p.topic), [], 'not delivered after the sender was told it expired')
  await end(c)
})

test('across a gateway restart: a queued command keeps its deadline (dropped when it passed while the gateway was down, delivered with the rest of it otherwise)', { timeout: scaled(120000) }, async () => {
  await leaveWithSession('exp-a')
  await leaveWithSession('exp-b')
  const short = scaled(3000)
  send({ message_id: 'r1', subject: 'exp-a/relay', body: body({ n: 1 }), ttl: short })
  send({ message_id: 'r2', subject: 'exp-b/relay', body: body({ n: 2 }), ttl: scaled(60000) })
  await new Promise((res) => setTimeout(res, scaled(500)))
  const stoppedAt = Date.now()
  assert.equal(await g.stop(), 0)
  // Stopping answers what is pending: nothing is known yet of a queued command, so it is a timeout, and says so.
  const stopped = await reply('r1', 10000)
  assert.equal(stopped.body.code, 'timeout')
  assert.match(String(stopped.body.error), /gateway stopping.*still queued/)
  await new Promise((res) => setTimeout(res, Math.max(0, short - (Date.now() - stoppedAt)) + scaled(500)))
  await g.start()
  await g.waitLog((l) => l.msg === 'upstream connected', 10000)
  const gotA: IPublishPacket[] = []
  const a = await connectDevice('exp-a', gotA)
  assert.equal(a.connack.sessionPresent, true, 'the session survived the restart')
  const gotB: IPublishPacket[] = []
  await connectDevice('exp-b', gotB)
  await waitFor('the long-lived command delivered after the restart', () => gotB.length === 1 || undefined, 10000)
  const left = gotB[0]!.properties?.messageExpiryInterval ?? 0
  assert.ok(left > 0 && left < scaled(60000) / 1000, `remaining expiry ${left} s`)
  await new Promise((res) => setTimeout(res, scaled(1000)))
  assert.deepEqual(gotA.map((p) => p.topic), [], 'the command whose deadline passed while the gateway was down is not delivered')
})
