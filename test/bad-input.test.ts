// Hostile or broken clients: the offending connection closes, everyone else carries on, the process survives.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { connect, collect, end, type MqttClient } from './helpers/mqtt.ts'
import { rawConnect, connectPacket } from './helpers/raw.ts'
import { waitFor, pause } from './helpers/net.ts'

let g: GatewayProc
let bystander: MqttClient
let seen: ReturnType<typeof collect>
let n = 0

before(async () => {
  g = await startGatewayProc({ mqtt: { openBroker: true, maxPacketSize: 4096 } })
  bystander = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'bystander' })
  seen = collect(bystander)
  await bystander.subscribeAsync('devices/bystander/cmd/#', { qos: 1 })
})
after(async () => { await end(bystander); await g?.cleanup() })

/** The well-behaved client still round-trips a message and the gateway still answers health checks. */
async function othersUnaffected(): Promise<void> {
  const tag = `ping-${++n}`
  await bystander.publishAsync('devices/bystander/cmd/echo', tag, { qos: 1 })
  await waitFor(`bystander round trip ${tag}`, () => seen.find((p) => p.payload.toString() === tag))
  assert.equal((await g.http('/healthz')).status, 200)
  assert.equal(g.proc.exitCode, null)
}

test('random bytes instead of MQTT close that connection only', async () => {
  for (let i = 0; i < 20; i++) {
    const c = await rawConnect(g.mqttPort)
    c.write(randomBytes(64 + i * 50))
    await Promise.race([c.closed, pause(2000)])
    c.socket.destroy()
  }
  await othersUnaffected()
})

test('garbage after a valid CONNECT closes the connection and is counted as malformed', async () => {
  const before = await g.metric('edgeway_refusals_total', { reason: 'malformed_packet' })
  const c = await rawConnect(g.mqttPort)
  c.send(connectPacket('garbage-1'))
  await c.next('connack')
  c.write(Buffer.from([0xf0, 0x00])) // reserved packet type 15
  await c.closed
  await waitFor('counted', async () => (await g.metric('edgeway_refusals_total', { reason: 'malformed_packet' })) > before)
  await othersUnaffected()
})

test('a truncated packet never completes; the connection is dropped by the keepalive and nothing is stored', async () => {
  const inBefore = await g.metric('edgeway_messages_in_total', { link: 'mqtt' })
  const c = await rawConnect(g.mqttPort)
  c.send(connectPacket('trunc-1', { keepalive: 1 }))
  await c.next('connack')
  const pub = mqttPacket.generate({ cmd: 'publish', topic: 'devices/trunc-1/telemetry', payload: Buffer.from('{"t":1}'), qos: 1, messageId: 1, dup: false, retain: false } as Packet)
  c.write(pub.subarray(0, pub.length - 3))
  await c.closed
  assert.equal(await g.metric('edgeway_messages_in_total', { link: 'mqtt' }), inBefore)
  assert.equal(c.packets.filter((p) => p.cmd === 'puback').length, 0)
  await othersUnaffected()
})

test('an oversized packet is refused as soon as its length header arrives', async () => {
  const before = await g.metric('edgeway_refusals_total', { reason: 'packet_too_large' })
  const c = await rawConnect(g.mqttPort)
  c.send(connectPacket('big-1'))
  await c.next('connack')
  // Only the header of a 10 MB publish is sent: the gateway must not wait to buffer the body.
  c.write(Buffer.from([0x32, 0x80, 0x80, 0x80, 0x05]))
  await c.closed
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'packet_too_large' }) - before, 1)
  await g.waitLog((l) => /exceeds mqtt.maxPacketSize \(4096 bytes\)/.test(l.msg))
  // and through MQTT.js, a payload just over the limit
  const big = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'big-2' })
  const closed = new Promise<void>((resolve) => big.once('close', () => resolve()))
  big.publish('devices/big-2/telemetry', Buffer.alloc(5000, 0x41), { qos: 1 })
  await closed
  await end(big)
  await othersUnaffected()
})

test('a flood of CONNECTs on one connection closes it (MQTT-3.1.0-2); a burst of 200 connections is survived', async () => {
  const c = await rawConnect(g.mqttPort)
  for (let i = 0; i < 50; i++) c.send(connectPacket('flood-1'))
  await c.closed
  assert.ok(c.packets.filter((p) => p.cmd === 'connack').length <= 1)
  const burst = await Promise.all(Array.from({ length: 200 }, () => rawConnect(g.mqttPort)))
  for (const [i, b] of burst.entries()) b.send(connectPacket(`burst-${i}`))
  await waitFor('connacks', () => burst.every((b) => b.packets.some((p) => p.cmd === 'connack')), 20000)
  for (const b of burst) b.socket.destroy()
  await othersUnaffected()
})

test('publishing to a topic with wildcards or an invalid device id closes that connection', async () => {
  const c = await rawConnect(g.mqttPort)
  c.send(connectPacket('wild-1'))
  await c.next('connack')
  c.send({ cmd: 'publish', topic: 'devices/+/telemetry', payload: Buffer.from('{"t":1}'), qos: 1, messageId: 3 })
  await c.closed
  const d = await rawConnect(g.mqttPort)
  d.send(connectPacket('wild-2'))
  await d.next('connack')
  d.send({ cmd: 'publish', topic: 'devices/ bad id /telemetry', payload: Buffer.from('{"t":1}'), qos: 1, messageId: 4 })
  await d.closed
  await othersUnaffected()
})

test('spec-mandated closes (bad UTF-8 topic, packet id 0, DUP on QoS 0) close that connection only, are counted, store nothing', async () => {
  const frame = (first: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([first, body.length]), body]) // bodies < 128 bytes
  const str = (b: Buffer): Buffer => Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b])
  const bad: [string, (id: string) => Buffer][] = [
    ['invalid UTF-8 topic', (id) => frame(0x32, Buffer.concat([str(Buffer.concat([Buffer.from(`devices/${id}/telemetry`), Buffer.from([0xc0, 0x80])])), Buffer.from([0, 1]), Buffer.from('{"t":1}')]))],
    ['QoS 1 with packet id 0', (id) => frame(0x32, Buffer.concat([str(Buffer.from(`devices/${id}/telemetry`)), Buffer.from([0, 0]), Buffer.from('{"t":1}')]))],
    ['DUP on QoS 0', (id) => frame(0x38, Buffer.concat([str(Buffer.from(`devices/${id}/telemetry`)), Buffer.from('{"t":1}')]))],
  ]
  for (const [what, build] of bad) {
    const [inBefore, refusedBefore] = [await g.metric('edgeway_messages_in_total', { link: 'mqtt' }), await g.metric('edgeway_refusals_total', { reason: 'malformed_packet' })]
    const id = `strict-${++n}`
    const c = await rawConnect(g.mqttPort)
    c.send(connectPacket(id))
    await c.next('connack')
    c.write(build(id))
    await c.closed
    assert.equal(c.packets.filter((p) => p.cmd === 'puback').length, 0, what)
    await waitFor(`${what} counted`, async () => (await g.metric('edgeway_refusals_total', { reason: 'malformed_packet' })) > refusedBefore)
    assert.equal(await g.metric('edgeway_messages_in_total', { link: 'mqtt' }), inBefore, `${what}: nothing stored`)
  }
  await othersUnaffected()
})
