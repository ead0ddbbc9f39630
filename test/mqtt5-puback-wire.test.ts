// The PUBACK bytes an MQTT 5 device gets, read off the socket: a success with no properties is the 4-byte form
// (MQTT 5.0 section 3.4.2.1: the reason code and property length may be left out when the code is 0x00 and there
// are no properties), the same 4 bytes as 3.1.1, on the fast path (plain topic, topic alias set and used) and on
// aedes' path (which writes 6 bytes, code and empty properties, unless the gateway sets the code: aedes-adapter.ts
// hookWrites); a refusal carries its reason code. A parser that accepts both forms cannot tell them apart, so the
// frames are split from the raw bytes here.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect as netConnect, type Socket } from 'node:net'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { scaled } from './helpers/net.ts'

let g: GatewayProc
const secrets: Record<string, string> = {}

before(async () => {
  g = await startGatewayProc()
  for (const id of ['pw5', 'pw4']) secrets[id] = await addDevice(g, id)
})
after(async () => { await g?.cleanup() })

/** A raw connection that keeps every frame the gateway sends as its exact bytes. */
interface Wire { socket: Socket; frames: Buffer[]; send(p: Record<string, unknown>): void; frame(timeoutMs?: number): Promise<Buffer>; end(): void }

async function wire(id: string, protocolVersion: 4 | 5): Promise<Wire> {
  const socket = netConnect(g.mqttPort, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.on('error', () => undefined)
  const frames: Buffer[] = []
  let buf = Buffer.alloc(0)
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d])
    // fixed header: type byte, then the remaining length as a variable byte integer
    for (;;) {
      let len = 0, mul = 1, i = 1
      for (; i < buf.length && i <= 4; i++) { len += (buf[i]! & 0x7f) * mul; mul *= 128; if ((buf[i]! & 0x80) === 0) break }
      if (i >= buf.length || buf.length < i + 1 + len) return
      frames.push(buf.subarray(0, i + 1 + len))
      buf = buf.subarray(i + 1 + len)
    }
  })
  const w: Wire = {
    socket, frames,
    send: (p) => { socket.write(mqttPacket.generate(p as unknown as Packet, { protocolVersion })) },
    async frame(timeoutMs = 5000) {
      const deadline = Date.now() + scaled(timeoutMs)
      while (frames.length === 0) {
        if (Date.now() > deadline) throw new Error(`no packet within ${scaled(timeoutMs)} ms`)
        await new Promise((r) => setTimeout(r, 5))
      }
      return frames.shift()!
    },
    end: () => { socket.destroy() },
  }
  w.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion, clean: true, clientId: id, keepalive: 30, username: id, password: Buffer.from(secrets[id]!) })
  const connack = await w.frame()
  assert.equal(connack[0], 0x20, 'CONNACK')
  assert.equal(connack[3], 0, 'accepted')
  return w
}

const publish = (w: Wire, topic: string, messageId: number, payload: string, properties?: Record<string, unknown>): void =>
  w.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId, retain: false, dup: false, ...(properties ? { properties } : {}) })

const shortAck = (id: number): number[] => [0x40, 0x02, id >> 8, id & 0xff]

test('v5 PUBACK 0x00 is the 4-byte form on the fast path, with a topic alias set and used, and on aedes\' path (PUBREC, PUBCOMP too); 3.1.1 gets the same bytes', async () => {
  const w = await wire('pw5', 5)
  publish(w, 'devices/pw5/telemetry', 0x1234, '{"t":1}')
  assert.deepEqual([...await w.frame()], shortAck(0x1234), 'fast path, plain topic')
  publish(w, 'devices/pw5/telemetry', 0x0102, '{"t":2}', { topicAlias: 1 })
  assert.deepEqual([...await w.frame()], shortAck(0x0102), 'fast path, alias set')
  publish(w, '', 0xfffe, '{"t":3}', { topicAlias: 1 })
  assert.deepEqual([...await w.frame()], shortAck(0xfffe), 'fast path, alias used')
  // not telemetry: aedes' own publish handler writes the ack (through mqtt-packet)
  publish(w, 'devices/pw5/state', 7, '{"firmware":"1.0"}')
  assert.deepEqual([...await w.frame()], shortAck(7), 'aedes path')
  // QoS 2 (aedes' path): PUBREC and PUBCOMP have the same short form (3.5.2.1, 3.7.2.1)
  w.send({ cmd: 'publish', topic: 'devices/pw5/telemetry', payload: Buffer.from('{"t":5}'), qos: 2, messageId: 0x0203, retain: false, dup: false })
  assert.deepEqual([...await w.frame()], [0x50, 0x02, 0x02, 0x03], 'PUBREC')
  w.send({ cmd: 'pubrel', messageId: 0x0203 })
  assert.deepEqual([...await w.frame()], [0x70, 0x02, 0x02, 0x03], 'PUBCOMP')
  w.end()

  const w4 = await wire('pw4', 4)
  publish(w4, 'devices/pw4/telemetry', 0x1234, '{"t":1}')
  assert.deepEqual([...await w4.frame()], shortAck(0x1234), '3.1.1')
  w4.end()
})

test('a v5 refusal keeps its reason code on the wire: 0x99 for a payload that does not decode, 0x87 for another device\'s topic', async () => {
  const w = await wire('pw5', 5)
  publish(w, 'devices/pw5/telemetry', 0x0a0b, '{"t":')
  const bad = await w.frame()
  assert.equal(bad[0], 0x40)
  assert.ok(bad[1]! >= 3, 'long form: remaining length covers the reason code')
  assert.deepEqual([bad[2], bad[3], bad[4]], [0x0a, 0x0b, 0x99])
  publish(w, 'devices/pw4/telemetry', 9, '{"t":1}')
  const acl = await w.frame()
  assert.deepEqual([acl[0], acl[2], acl[3], acl[4]], [0x40, 0, 9, 0x87])
  // and the connection goes on with short acks
  publish(w, 'devices/pw5/telemetry', 10, '{"t":4}')
  assert.deepEqual([...await w.frame()], shortAck(10))
  w.end()
})
