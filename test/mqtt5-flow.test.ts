// MQTT 5 flow control on the gateway's broker, with the real gateway: the client's Receive Maximum on what it is sent
// (live and on a replayed session queue; QoS 0 not counted; 3.1.1 unchanged), the gateway's own Receive Maximum on
// what it is sent (DISCONNECT 0x93), the client's Maximum Packet Size on a replayed queue, and server-side topic
// aliases. At the wire with a raw client, and with MQTT.js 5 and mosquitto_sub -V 5 as real clients.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import mqtt, { type IClientOptions, type IConnackPacket } from 'mqtt'
import type { IPublishPacket } from 'mqtt-packet'
import { cliSecret, startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { collect, end, type MqttClient } from './helpers/mqtt.ts'
import { waitFor, scaled } from './helpers/net.ts'
import { rawConnect, connectPacket } from './helpers/raw.ts'
import { raw5, type Raw5 } from './helpers/raw5.ts'
import { mosquittoClientsAvailable } from './helpers/mosquitto.ts'

let g: GatewayProc
let url: string
const secrets: Record<string, string> = {}
let opsSecret = ''
let labSecret = ''
let ops: MqttClient

const V5 = { protocolVersion: 5 } as const
const refusals = (reason: string): Promise<number> => g.metric('edgeway_refusals_total', { reason })
const settle = (ms = 300): Promise<void> => new Promise((r) => setTimeout(r, scaled(ms)))
const dev = (id: string, suffix: string, props: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ clientId: `${id}:${suffix}`, username: id, password: Buffer.from(secrets[id]!), properties: props, ...extra })

async function connect5(opts: IClientOptions): Promise<{ c: MqttClient; connack: IConnackPacket }> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...V5, ...opts })
  const connack = await new Promise<IConnackPacket>((resolve, reject) => { c.once('connect', resolve); c.once('error', (e) => { c.end(true); reject(e) }) })
  return { c, connack }
}

async function subscribe(c: Raw5, topic: string, qos: 0 | 1 | 2): Promise<void> {
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos }] })
  const suback = await c.next('suback') as { granted: number[] }
  assert.deepEqual(suback.granted, [qos])
}

const payloads = (ps: IPublishPacket[]): string[] => ps.map((p) => p.payload.toString())

before(async () => {
  mosquittoClientsAvailable()
  g = await startGatewayProc({ roles: { lab: { rules: [{ allow: 'both', topic: 'lab/#' }] } } })
  url = `mqtt://127.0.0.1:${g.mqttPort}`
  for (const id of ['f1', 'f2', 'f3', 'f4', 'f5', 'f6']) secrets[id] = await addDevice(g, id)
  opsSecret = await cliSecret(g, ['client', 'add', 'fops', '--role', 'operator'])
  labSecret = await cliSecret(g, ['client', 'add', 'flab', '--role', 'lab'])
  ops = (await connect5({ clientId: 'fops-1', username: 'fops', password: opsSecret })).c
})
after(async () => { await end(ops); await g?.cleanup() })

test('the client\'s Receive Maximum: exactly 2 QoS 1 PUBLISHes in flight, the rest in order as it acks; QoS 0 passes; a 3.1.1 client is unchanged', async () => {
  const { c } = await raw5(g.mqttPort, dev('f1', 'rm', { receiveMaximum: 2 }))
  await subscribe(c, 'devices/f1/cmd/+', 1)
  const v3 = await rawConnect(g.mqttPort)
  v3.send(connectPacket('f1:v3', { username: 'f1', password: Buffer.from(secrets.f1!) }))
  await v3.next('connack')
  v3.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'devices/f1/cmd/+', qos: 1 }] })
  await v3.next('suback')
  for (let i = 0; i < 6; i++) await ops.publishAsync(`devices/f1/cmd/c${i}`, `{"id":"${i}"}`, { qos: 1 })
  await c.publishCount(2)
  await settle()
  assert.deepEqual(payloads(c.publishes), ['{"id":"0"}', '{"id":"1"}'], 'two in flight, no more')
  // QoS 0 is not counted: it goes out while the window is full
  await ops.publishAsync('devices/f1/cmd/q0', '{"id":"q0"}', { qos: 0 })
  await waitFor('the QoS 0 one', () => c.publishes.length === 3)
  assert.equal(c.publishes[2]!.qos, 0)
  // each PUBACK lets exactly one more out, in order
  const acked = new Set<number>()
  for (let n = 0; n < 6; n++) {
    const next = c.publishes.find((p) => p.qos === 1 && !acked.has(p.messageId!))!
    acked.add(next.messageId!)
    c.send({ cmd: 'puback', messageId: next.messageId, reasonCode: 0 })
    if (n < 4) {
      await c.publishCount(4 + n)
      await settle(100)
      assert.equal(c.publishes.length, 4 + n, `after ${n + 1} acks: one more, not two`)
    }
  }
  await settle()
  const qos1 = c.publishes.filter((p) => p.qos === 1)
  assert.deepEqual(payloads(qos1), [0, 1, 2, 3, 4, 5].map((i) => `{"id":"${i}"}`), 'all, in order, none twice')
  assert.equal(new Set(qos1.map((p) => p.messageId)).size, 6)
  // the 3.1.1 client got everything at once without acknowledging anything
  await waitFor('3.1.1 got all 7', () => v3.packets.filter((p) => p.cmd === 'publish').length === 7)
  await c.end()
  v3.socket.destroy()
})

test('the client\'s Receive Maximum with QoS 2: a PUBREC does not free the slot, the PUBCOMP does; a PUBREC >= 0x80 does', async () => {
  const { c } = await raw5(g.mqttPort, dev('f2', 'rm2', { receiveMaximum: 1 }))
  await subscribe(c, 'devices/f2/cmd/+', 2)
  for (let i = 0; i < 3; i++) await ops.publishAsync(`devices/f2/cmd/c${i}`, `${i}`, { qos: 2 })
  await c.publishCount(1)
  const first = c.publishes[0]!
  c.send({ cmd: 'pubrec', messageId: first.messageId, reasonCode: 0 })
  await c.next('pubrel')
  await settle()
  assert.equal(c.publishes.length, 1, 'still in flight until PUBCOMP')
  c.send({ cmd: 'pubcomp', messageId: first.messageId, reasonCode: 0 })
  await c.publishCount(2)
  // refused by the client: 0x80 ends that message's flow and frees its slot
  c.send({ cmd: 'pubrec', messageId: c.publishes[1]!.messageId, reasonCode: 0x80 })
  await c.publishCount(3)
  assert.deepEqual(payloads(c.publishes), ['0', '1', '2'])
  await c.end()
})

test('MQTT.js 5 with receiveMaximum 2 and QoS 2 gets a burst of 30 commands (it ends the connection itself, 0x93, when a server has more in flight)', async () => {
  const { c } = await connect5({ clientId: 'f3:js', username: 'f3', password: secrets.f3!, properties: { receiveMaximum: 2 } })
  let failed: Error | null = null
  c.on('error', (e) => { failed = e })
  const got: string[] = []
  c.on('message', (_t, payload) => { got.push(payload.toString()) })
  await c.subscribeAsync('devices/f3/cmd/+', { qos: 2 })
  // all at once: the gateway has all 30 to send before the device has answered the first
  await Promise.all(Array.from({ length: 30 }, (_, i) => ops.publishAsync(`devices/f3/cmd/c${i % 3}`, `${i}`, { qos: 2 })))
  await waitFor('30 commands', () => failed ?? got.length === 30, scaled(15000))
  assert.equal(failed, null)
  assert.deepEqual([...got].sort((a, b) => Number(a) - Number(b)), Array.from({ length: 30 }, (_, i) => `${i}`))
  await end(c)
})

test('a persistent session\'s queue at reconnect obeys Receive Maximum; unacked and waiting messages survive a disconnect, acked ones are not sent again', async () => {
  const opts = dev('f4', 'ps', { receiveMaximum: 2, sessionExpiryInterval: 300 }, { clean: false })
  const { c: first } = await raw5(g.mqttPort, opts)
  await subscribe(first, 'devices/f4/cmd/+', 1)
  await first.end()
  for (let i = 0; i < 5; i++) await ops.publishAsync(`devices/f4/cmd/c${i}`, `${i}`, { qos: 1 })
  const { c, connack } = await raw5(g.mqttPort, opts)
  assert.equal((connack as { sessionPresent: boolean }).sessionPresent, true)
  await c.publishCount(2)
  await settle()
  assert.deepEqual(payloads(c.publishes), ['0', '1'])
  c.send({ cmd: 'puback', messageId: c.publishes[0]!.messageId, reasonCode: 0 })
  await c.publishCount(3)
  await settle(100)
  assert.deepEqual(payloads(c.publishes), ['0', '1', '2'])
  // gone with 1 and 2 in flight and 3, 4 waiting: nothing is lost, 0 (acked) does not come again
  c.socket.destroy()
  await c.closed
  const { c: again } = await raw5(g.mqttPort, opts)
  await again.publishCount(2)
  await settle()
  assert.deepEqual(payloads(again.publishes), ['1', '2'])
  for (let n = 0; n < 4; n++) {
    const p = again.publishes[n]!
    again.send({ cmd: 'puback', messageId: p.messageId, reasonCode: 0 })
    if (n < 2) await again.publishCount(3 + n)
  }
  await settle()
  assert.deepEqual(payloads(again.publishes), ['1', '2', '3', '4'])
  await again.end()
})

test('the gateway\'s own Receive Maximum: advertised (1000); the 1001st unanswered QoS 1/2 publish gets DISCONNECT 0x93', { timeout: scaled(60000) }, async () => {
  const { c, connack } = await raw5(g.mqttPort, dev('f5', 'in'))
  assert.equal((connack as { properties?: { receiveMaximum?: number } }).properties?.receiveMaximum, 1000)
  const before = await refusals('receive_maximum')
  // QoS 2 without PUBREL: each stays unanswered (PUBREC is not an answer) until PUBCOMP
  for (let i = 1; i <= 1000; i++) c.send({ cmd: 'publish', topic: 'devices/f5/state', payload: Buffer.from(`${i}`), qos: 2, messageId: i })
  await waitFor('1000 PUBRECs', () => c.packets.filter((p) => p.cmd === 'pubrec').length === 1000, scaled(30000))
  // an answer frees a slot
  c.send({ cmd: 'pubrel', messageId: 1, reasonCode: 0 })
  await c.next('pubcomp')
  c.send({ cmd: 'publish', topic: 'devices/f5/state', payload: Buffer.from('again'), qos: 1, messageId: 2000 })
  await c.next('puback')
  // 999 unanswered: one more fits, the one after it does not
  c.send({ cmd: 'publish', topic: 'devices/f5/state', payload: Buffer.from('the 1000th'), qos: 2, messageId: 1001 })
  c.send({ cmd: 'publish', topic: 'devices/f5/state', payload: Buffer.from('one too many'), qos: 1, messageId: 1002 })
  const d = await c.next('disconnect') as { reasonCode: number; properties?: { reasonString?: string } }
  assert.equal(d.reasonCode, 0x93)
  assert.match(d.properties?.reasonString ?? '', /Receive Maximum/)
  await c.closed
  assert.equal(c.packets.filter((p) => p.cmd === 'pubrec').length, 1001)
  assert.equal(c.packets.find((p) => p.cmd === 'puback'), undefined, 'the one beyond the limit is not handled')
  assert.equal(await refusals('receive_maximum') - before, 1)
})

test('the client\'s Maximum Packet Size on a replayed queue: the larger command is dropped (counted) and gone from the session; the smaller ones arrive', async () => {
  const opts = dev('f6', 'mp', { maximumPacketSize: 200, sessionExpiryInterval: 300 }, { clean: false })
  const { c: first } = await raw5(g.mqttPort, opts)
  await subscribe(first, 'devices/f6/cmd/+', 1)
  await first.end()
  const before = await refusals('client_max_packet_size')
  await ops.publishAsync('devices/f6/cmd/small', '{"id":"s1"}', { qos: 1 })
  await ops.publishAsync('devices/f6/cmd/big', JSON.stringify({ id: 'big', args: 'x'.repeat(400) }), { qos: 1 })
  await ops.publishAsync('devices/f6/cmd/small', '{"id":"s2"}', { qos: 1 })
  const { c } = await raw5(g.mqttPort, opts)
  await c.publishCount(2)
  await settle()
  assert.deepEqual(payloads(c.publishes), ['{"id":"s1"}', '{"id":"s2"}'])
  assert.equal(await refusals('client_max_packet_size') - before, 1)
  for (const p of c.publishes) c.send({ cmd: 'puback', messageId: p.messageId, reasonCode: 0 })
  await settle()
  await c.end()
  // discarded as if delivered: not in the session any more
  const { c: again } = await raw5(g.mqttPort, opts)
  await settle(500)
  assert.deepEqual(again.publishes, [])
  assert.equal(await refusals('client_max_packet_size') - before, 1)
  await again.end()
})

test('server topic aliases: a topic sent again gets an alias (topic + alias, then "" + alias), never more than the client allows, none for short topics; reset on reconnect', async () => {
  const lab = { username: 'flab', password: Buffer.from(labSecret), clientId: 'flab-1', properties: { topicAliasMaximum: 2 } }
  const pub = (await connect5({ clientId: 'flab-pub', username: 'flab', password: labSecret })).c
  const { c } = await raw5(g.mqttPort, lab)
  await subscribe(c, 'lab/#', 1)
  const topics = ['lab/alpha/telemetry', 'lab/beta/telemetry', 'lab/gamma/telemetry', 'lab/a']
  for (let round = 0; round < 3; round++) for (const t of topics) await pub.publishAsync(t, `${t} ${round}`, { qos: 1 })
  await c.publishCount(12)
  const wire = c.publishes.map((p) => [p.topic, p.properties?.topicAlias ?? 0])
  assert.deepEqual(wire, [
    ['lab/alpha/telemetry', 0], ['lab/beta/telemetry', 0], ['lab/gamma/telemetry', 0], ['lab/a', 0],
    ['lab/alpha/telemetry', 1], ['lab/beta/telemetry', 2], ['lab/gamma/telemetry', 0], ['lab/a', 0],
    ['', 1], ['', 2], ['lab/gamma/telemetry', 0], ['lab/a', 0],
  ])
  for (const p of c.publishes) c.send({ cmd: 'puback', messageId: p.messageId, reasonCode: 0 })
  await c.end()
  // a new connection starts without aliases
  const { c: again } = await raw5(g.mqttPort, lab)
  await subscribe(again, 'lab/#', 0)
  for (let i = 0; i < 3; i++) await pub.publishAsync('lab/alpha/telemetry', `${i}`, { qos: 0 })
  await again.publishCount(3)
  assert.deepEqual(again.publishes.map((p) => [p.topic, p.properties?.topicAlias ?? 0]), [['lab/alpha/telemetry', 0], ['lab/alpha/telemetry', 1], ['', 1]])
  await again.end()
  // a client that allows none gets none
  const { c: none } = await raw5(g.mqttPort, { ...lab, clientId: 'flab-2', properties: {} })
  await subscribe(none, 'lab/#', 0)
  for (let i = 0; i < 3; i++) await pub.publishAsync('lab/alpha/telemetry', `${i}`, { qos: 0 })
  await none.publishCount(3)
  assert.ok(none.publishes.every((p) => p.topic === 'lab/alpha/telemetry' && p.properties?.topicAlias === undefined))
  await none.end()
  await end(pub)
})

// (mosquitto_sub 2.0.11 sends a Topic Alias Maximum given with -D but its library refuses a PUBLISH with an empty
// topic as a protocol error: it cannot take server aliases, so it is run here without.)
test('MQTT.js 5 resolves the gateway\'s topic aliases; MQTT.js 5 and mosquitto_sub -V 5 with a Receive Maximum of 2 get everything in order', async () => {
  const pub = (await connect5({ clientId: 'flab-pub2', username: 'flab', password: labSecret })).c
  const { c } = await connect5({ clientId: 'flab-js', username: 'flab', password: labSecret, properties: { topicAliasMaximum: 4, receiveMaximum: 2 } })
  // (MQTT.js resolves an alias into the 'message' event's topic; the packet keeps the empty one)
  const got: string[] = []
  c.on('message', (topic, payload) => { got.push(`${topic} ${payload.toString()}`) })
  let aliased = 0
  c.on('packetreceive', (p) => { if (p.cmd === 'publish' && p.topic === '') aliased++ })
  await c.subscribeAsync('lab/#', { qos: 1 })
  const sub = spawn('/usr/bin/mosquitto_sub', ['-V', '5', '-h', '127.0.0.1', '-p', String(g.mqttPort), '-i', 'flab-mosq', '-u', 'flab', '-P', labSecret,
    '-D', 'connect', 'receive-maximum', '2', '-q', '1', '-t', 'lab/#', '-C', '20', '-v'])
  let out = ''
  sub.stdout.on('data', (d: Buffer) => { out += d.toString() })
  let err = ''
  sub.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const exited = new Promise<number | null>((resolve) => sub.on('exit', resolve))
  await settle(500)
  const sent: string[] = []
  for (let i = 0; i < 20; i++) {
    const t = `lab/sensor-${i % 2}/telemetry`
    sent.push(`${t} ${i}`)
    await pub.publishAsync(t, `${i}`, { qos: 1 })
  }
  await waitFor('MQTT.js got 20', () => got.length === 20)
  assert.deepEqual(got, sent)
  assert.equal(aliased, 16, 'each topic: sent plain, then with its alias, then 8 times as the alias only')
  assert.equal(await Promise.race([exited, settle(10000).then(() => 'timeout')]), 0, `mosquitto_sub: ${out} ${err}`)
  assert.deepEqual(out.trim().split('\n'), sent)
  await end(c, pub)
})
