// MQTT shared subscriptions ($share/<group>/<filter>) through the gateway's broker (gateway/broker/shared-subscriptions.ts):
// one member per message, round robin over members of different clients (MQTT.js 5 over TCP and WebSocket, MQTT.js
// 3.1.1, mosquitto_sub -V 5), the QoS minimum, no retained messages on subscribe, UNSUBSCRIBE, Subscription Identifiers,
// malformed share names, No Local refused, and the ACL judged on the inner filter (attacks: a tenant role reading
// another tenant's topics, a device reading another device's commands through $share).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket } from 'mqtt'
import { cliSecret, startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { collect, end, type MqttClient } from './helpers/mqtt.ts'
import { waitFor, pause } from './helpers/net.ts'
import { rawConnect, connectPacket } from './helpers/raw.ts'
import { startMosquitto, mosquittoClientsAvailable, type Mosquitto } from './helpers/mosquitto.ts'
import mqttPacket from 'mqtt-packet'

let g: GatewayProc
let mosq: Mosquitto
let url: string
const secrets: Record<string, string> = {}
let dev: MqttClient

/** A client logged in as `name` (device or integration client), v5 unless told; resolves with its CONNACK too. */
async function login(name: string, extra: IClientOptions = {}, u = url): Promise<{ c: MqttClient; got: IPublishPacket[]; connack: IConnackPacket }> {
  const c = mqtt.connect(u, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5, clientId: `${name}:${Math.random().toString(16).slice(2, 8)}`, username: name, password: secrets[name]!, ...extra })
  const got = collect(c)
  const connack = await new Promise<IConnackPacket>((resolve, reject) => { c.once('connect', resolve); c.once('error', (e) => { c.end(true); reject(e) }) })
  return { c, got, connack }
}

/** The reason codes of a SUBSCRIBE (MQTT.js rejects when one is a failure: the SUBACK is on the error). */
async function granted(c: MqttClient, filters: string[], opts: { qos?: 0 | 1 | 2; nl?: boolean; rap?: boolean; rh?: number; properties?: { subscriptionIdentifier?: number } } = {}): Promise<number[]> {
  return await c.subscribeAsync(filters, { qos: 1, ...opts }).then((x) => x.map((y) => y.qos), (e: Error & { packet?: { granted?: number[] } }) => e.packet?.granted ?? [-1])
}

let seq = 0
/** Publishes n telemetry readings of the device (QoS 1, acked after the commit); resolves with their `n` values. */
async function telemetry(n: number, qos: 0 | 1 = 1): Promise<number[]> {
  const sent: number[] = []
  for (let i = 0; i < n; i++) { const k = ++seq; sent.push(k); await dev.publishAsync('devices/sh-dev/telemetry', JSON.stringify({ n: k }), { qos }) }
  return sent
}
const seqs = (got: IPublishPacket[], topic = 'devices/sh-dev/telemetry'): number[] => got.filter((p) => p.topic === topic).map((p) => (JSON.parse(p.payload.toString()) as { n: number }).n)

before(async () => {
  mosquittoClientsAvailable()
  mosq = await startMosquitto()
  g = await startGatewayProc({
    roles: {
      lab: { rules: [{ allow: 'both', topic: 'lab/#' }] },
      'tenant-a': { rules: [{ allow: 'both', topic: 'tenants/a/#' }] },
      'tenant-b': { rules: [{ allow: 'both', topic: 'tenants/b/#' }] },
    },
  })
  url = `mqtt://127.0.0.1:${g.mqttPort}`
  for (const id of ['sh-dev', 'sh-dev2']) secrets[id] = await addDevice(g, id)
  for (const [name, role] of [['sh-obs1', 'observer'], ['sh-obs2', 'observer'], ['sh-obs3', 'observer'], ['sh-lab', 'lab'], ['sh-lab2', 'lab'], ['sh-ta', 'tenant-a'], ['sh-tb', 'tenant-b'], ['sh-ops', 'operator']] as const) {
    secrets[name] = await cliSecret(g, ['client', 'add', name, '--role', role])
  }
  dev = (await login('sh-dev', { protocolVersion: 4 })).c
})
after(async () => { await end(dev); await g?.cleanup(); await mosq?.stop() })

test('CONNACK advertises Shared Subscription Available (v5 on TCP and WebSocket)', async () => {
  for (const u of [url, `ws://127.0.0.1:${g.wsPort}/mqtt`]) {
    const { c, connack } = await login('sh-obs1', {}, u)
    assert.equal(connack.properties?.sharedSubscriptionAvailable, true, u)
    await end(c)
  }
})

test('each telemetry reading goes to exactly one member, round robin over TCP and WebSocket members; a plain subscriber gets all', async () => {
  const a = await login('sh-obs1')
  const b = await login('sh-obs2', {}, `ws://127.0.0.1:${g.wsPort}/mqtt`)
  const plain = await login('sh-obs3')
  assert.deepEqual(await granted(a.c, ['$share/rr/devices/+/telemetry']), [1])
  assert.deepEqual(await granted(b.c, ['$share/rr/devices/+/telemetry']), [1])
  assert.deepEqual(await granted(plain.c, ['devices/+/telemetry']), [1])
  const sent = await telemetry(20)
  await waitFor('every reading at one member', () => seqs(a.got).length + seqs(b.got).length >= 20 && seqs(plain.got).length >= 20)
  await pause(200)
  const both = [...seqs(a.got), ...seqs(b.got)].sort((x, y) => x - y)
  assert.deepEqual(both, sent, 'each reading exactly once across the group')
  assert.equal(seqs(a.got).length, 10, 'round robin: half each')
  assert.equal(seqs(b.got).length, 10)
  assert.deepEqual(seqs(plain.got), sent)
  assert.ok(a.got.every((p) => p.qos === 1))
  await end(a.c, b.c, plain.c)
})

test('the QoS is the lesser of the member\'s granted QoS and the message\'s', async () => {
  const m0 = await login('sh-lab')
  const pub = await login('sh-lab2')
  assert.deepEqual(await granted(m0.c, ['$share/q/lab/q'], { qos: 0 }), [0])
  await pub.c.publishAsync('lab/q', 'one', { qos: 1 })
  await pub.c.publishAsync('lab/q', 'two', { qos: 2 })
  await waitFor('two messages', () => m0.got.length >= 2)
  assert.deepEqual(m0.got.map((p) => [p.payload.toString(), p.qos]), [['one', 0], ['two', 0]])
  await end(m0.c)
  const m2 = await login('sh-lab')
  assert.deepEqual(await granted(m2.c, ['$share/q/lab/q'], { qos: 2 }), [2])
  await pub.c.publishAsync('lab/q', 'three', { qos: 1 })
  await pub.c.publishAsync('lab/q', 'four', { qos: 2 })
  await pub.c.publishAsync('lab/q', 'five', { qos: 0 })
  await waitFor('three messages', () => m2.got.length >= 3)
  assert.deepEqual(m2.got.map((p) => [p.payload.toString(), p.qos]).sort(), [['five', 0], ['four', 2], ['three', 1]])
  await end(m2.c, pub.c)
})

test('retained messages are not sent on subscribe to a shared subscription; Retain As Published keeps the flag on live ones', async () => {
  const pub = await login('sh-lab2')
  await pub.c.publishAsync('lab/ret/x', 'kept', { qos: 1, retain: true })
  const plain = await login('sh-lab')
  await granted(plain.c, ['lab/ret/#'])
  await waitFor('the plain subscriber got the retained message', () => plain.got.length >= 1)
  const shared = await login('sh-lab')
  assert.deepEqual(await granted(shared.c, ['$share/r/lab/ret/#']), [1])
  const rap = await login('sh-lab')
  assert.deepEqual(await granted(rap.c, ['$share/r2/lab/ret/#'], { rap: true }), [1])
  await pause(300)
  assert.equal(shared.got.length, 0, 'no retained message on a shared subscribe')
  assert.equal(rap.got.length, 0)
  await pub.c.publishAsync('lab/ret/x', 'live', { qos: 1, retain: true })
  await waitFor('live retained message at both groups', () => shared.got.length >= 1 && rap.got.length >= 1)
  assert.equal(shared.got[0]!.retain, false, 'retain cleared without Retain As Published')
  assert.equal(rap.got[0]!.retain, true, 'retain kept with Retain As Published')
  await pub.c.publishAsync('lab/ret/x', '', { qos: 1, retain: true })
  await end(pub.c, plain.c, shared.c, rap.c)
})

test('UNSUBSCRIBE $share/group/filter: the member gets no more, the rest of the group gets all; an unknown one is 0x11', async () => {
  const a = await login('sh-obs1')
  const b = await login('sh-obs2')
  await granted(a.c, ['$share/un/devices/sh-dev/telemetry'])
  await granted(b.c, ['$share/un/devices/sh-dev/telemetry'])
  const first = await telemetry(4)
  await waitFor('4 delivered', () => seqs(a.got).length + seqs(b.got).length >= 4)
  assert.ok(seqs(a.got).length > 0 && seqs(b.got).length > 0)
  const un = await a.c.unsubscribeAsync('$share/un/devices/sh-dev/telemetry')
  assert.deepEqual((un as { granted?: number[] } | undefined)?.granted, [0])
  const before = seqs(a.got).length
  const next = await telemetry(6)
  await waitFor('6 more at b', () => seqs(b.got).filter((n) => n > first.at(-1)!).length >= 6)
  await pause(200)
  assert.equal(seqs(a.got).length, before, 'nothing after UNSUBSCRIBE')
  assert.deepEqual(seqs(b.got).filter((n) => n > first.at(-1)!), next)
  const none = await a.c.unsubscribeAsync('$share/nothing/devices/sh-dev/telemetry')
  assert.deepEqual((none as { granted?: number[] } | undefined)?.granted, [0x11])
  await end(a.c, b.c)
})

/** mosquitto_sub as a group member; resolves once its SUBSCRIBE is in (it prints "Subscribed" with -d). */
async function mosquittoSub(args: string[]): Promise<{ proc: ChildProcess; lines: string[] }> {
  // (line-buffered: its output goes to a pipe)
  const proc = spawn('stdbuf', ['-oL', '/usr/bin/mosquitto_sub', '-h', '127.0.0.1', '-p', String(g.mqttPort), '-d', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let buf = ''
  let err = ''
  proc.stdout!.on('data', (d: Buffer) => { buf += d.toString(); let i; while ((i = buf.indexOf('\n')) >= 0) { lines.push(buf.slice(0, i)); buf = buf.slice(i + 1) } })
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString() })
  try {
    await waitFor('mosquitto_sub subscribed', () => lines.some((l) => l.includes('SUBACK')) || (proc.exitCode !== null && Promise.reject(new Error(`mosquitto_sub exited: ${err} ${lines.join('\n')}`))))
  } catch (e) {
    proc.kill('SIGTERM')
    throw e
  }
  return { proc, lines }
}

test('a group of different clients: MQTT.js 5, MQTT.js 3.1.1 and mosquitto_sub -V 5 with a Subscription Identifier', async () => {
  const v5 = await login('sh-obs1')
  const v4 = await login('sh-obs2', { protocolVersion: 4 })
  await granted(v5.c, ['$share/mix/devices/+/telemetry'], { properties: { subscriptionIdentifier: 42 } })
  assert.deepEqual(await granted(v4.c, ['$share/mix/devices/+/telemetry']), [1])
  const ms = await mosquittoSub(['-V', '5', '-q', '1', '-u', 'sh-obs3', '-P', secrets['sh-obs3']!, '-i', 'sh-obs3:mosq',
    '-t', '$share/mix/devices/+/telemetry', '-D', 'subscribe', 'subscription-identifier', '7', '-F', 'SI=%S %p'])
  try {
    const sent = await telemetry(9)
    const fromMosq = (): number[] => ms.lines.filter((l) => l.startsWith('SI=')).map((l) => (JSON.parse(l.slice(l.indexOf(' ') + 1)) as { n: number }).n)
    await waitFor('9 delivered', () => seqs(v5.got).length + seqs(v4.got).length + fromMosq().length >= 9)
    await pause(200)
    assert.deepEqual([...seqs(v5.got), ...seqs(v4.got), ...fromMosq()].sort((x, y) => x - y), sent)
    assert.deepEqual([seqs(v5.got).length, seqs(v4.got).length, fromMosq().length], [3, 3, 3], 'round robin over three clients')
    assert.ok(v5.got.every((p) => p.properties?.subscriptionIdentifier === 42), 'MQTT.js member: its identifier')
    assert.ok(ms.lines.filter((l) => l.startsWith('SI=')).every((l) => l.startsWith('SI=7 ')), `mosquitto_sub member: its identifier (${ms.lines.join(' | ')})`)
  } finally {
    ms.proc.kill('SIGTERM')
    await end(v5.c, v4.c)
  }
})

test('3.1.1 clients share a group as with Mosquitto: the same split against the real Mosquitto and the gateway', async () => {
  const run = async (u: string, creds: (n: string) => IClientOptions, pubTopic: string, publish: (i: number) => Promise<unknown>): Promise<number[]> => {
    const a = mqtt.connect(u, { reconnectPeriod: 0, protocolVersion: 4, ...creds('sh-obs1') })
    const b = mqtt.connect(u, { reconnectPeriod: 0, protocolVersion: 4, ...creds('sh-obs2') })
    await Promise.all([a, b].map((c) => new Promise((r) => c.once('connect', r))))
    const ga = collect(a), gb = collect(b)
    await a.subscribeAsync(`$share/v4/${pubTopic}`, { qos: 1 })
    await b.subscribeAsync(`$share/v4/${pubTopic}`, { qos: 1 })
    for (let i = 0; i < 10; i++) await publish(i)
    await waitFor('10 split', () => ga.length + gb.length >= 10)
    await pause(200)
    await end(a, b)
    return [ga.length, gb.length]
  }
  const mosqPub = await mqtt.connectAsync(`mqtt://127.0.0.1:${mosq.port}`, { reconnectPeriod: 0 })
  const atMosquitto = await run(`mqtt://127.0.0.1:${mosq.port}`, (n) => ({ clientId: n }), 'devices/+/telemetry', (i) => mosqPub.publishAsync('devices/x/telemetry', `{"n":${i}}`, { qos: 1 }))
  await end(mosqPub)
  const atGateway = await run(url, (n) => ({ clientId: `${n}:v4`, username: n, password: secrets[n]! }), 'devices/+/telemetry', () => telemetry(1))
  assert.deepEqual(atMosquitto, [5, 5])
  assert.deepEqual(atGateway, atMosquitto)
})

/** SUBACK codes of a raw SUBSCRIBE (what MQTT.js refuses to send), v5 or 3.1.1; 'closed' if the connection ended instead. */
async function rawSuback(name: string, v: 4 | 5, filters: { topic: string; qos: 0 | 1; nl?: boolean }[]): Promise<{ granted: number[] | 'closed'; disconnect?: { reasonCode?: number; reason?: string } }> {
  const raw = await rawConnect(g.mqttPort)
  const parser = mqttPacket.parser({ protocolVersion: v })
  const packets: mqttPacket.Packet[] = []
  parser.on('packet', (p) => packets.push(p))
  raw.socket.removeAllListeners('data')
  raw.socket.on('data', (d) => parser.parse(d))
  raw.write(mqttPacket.generate(connectPacket(`${name}:raw${v}`, { username: name, password: Buffer.from(secrets[name]!), protocolVersion: v }) as unknown as mqttPacket.Packet, { protocolVersion: v }))
  await waitFor('CONNACK', () => packets.find((p) => p.cmd === 'connack'))
  raw.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 3, subscriptions: filters } as mqttPacket.Packet, { protocolVersion: v }))
  const r = await waitFor('SUBACK or close', () => packets.find((p) => p.cmd === 'suback') ?? (raw.isClosed() ? 'closed' as const : undefined))
  const d = packets.find((p) => p.cmd === 'disconnect') as (mqttPacket.IDisconnectPacket | undefined)
  raw.socket.destroy()
  return { granted: r === 'closed' ? 'closed' : (r as mqttPacket.ISubackPacket).granted as number[], ...(d ? { disconnect: { reasonCode: d.reasonCode, reason: d.properties?.reasonString } } : {}) }
}

test('malformed share names: v5 SUBACK 0x8F per filter, 3.1.1 0x80 (a + inside the name is a malformed filter: closed, as Mosquitto does); the internal name cannot be subscribed to', async () => {
  const bad = ['$share//devices/+/telemetry', '$share/g', '$share/g/', '$share/g#x/devices/+/telemetry', '$edgeway-share/g/devices/+/telemetry']
  const v5 = await rawSuback('sh-obs1', 5, [...bad.map((topic) => ({ topic, qos: 1 as const })), { topic: '$share/ok/devices/+/telemetry', qos: 1 }])
  assert.deepEqual(v5.granted, [0x8f, 0x8f, 0x8f, 0x8f, 0x8f, 1])
  const v4 = await rawSuback('sh-obs1', 4, [...bad.filter((b) => !b.includes('#x')).map((topic) => ({ topic, qos: 1 as const })), { topic: '$share/ok/devices/+/telemetry', qos: 1 }])
  assert.deepEqual(v4.granted, [0x80, 0x80, 0x80, 0x80, 1])
  assert.equal((await rawSuback('sh-obs1', 4, [{ topic: '$share/gr+oup/devices/+/telemetry', qos: 1 }])).granted, 'closed')
  assert.deepEqual((await rawSuback('sh-obs1', 5, [{ topic: '$share/gr+oup/devices/+/telemetry', qos: 1 }])).granted, [0x8f])
})

test('No Local on a shared subscription is a protocol error: DISCONNECT 0x82 with the reason', async () => {
  const r = await rawSuback('sh-obs1', 5, [{ topic: '$share/nl/devices/+/telemetry', qos: 1, nl: true }])
  assert.equal(r.granted, 'closed')
  assert.equal(r.disconnect?.reasonCode, 0x82)
  assert.match(r.disconnect?.reason ?? '', /No Local/)
})

test('attack: a tenant role cannot read another tenant\'s topics through $share (any group name, any wildcard)', async () => {
  const ta = await login('sh-ta')
  const tb = await login('sh-tb')
  const tries = ['$share/g/tenants/b/#', '$share/g/tenants/+/secret', '$share/g/#', '$share/g/+/+/secret', '$share/tenants/a/tenants/b/secret']
  assert.deepEqual(await granted(ta.c, tries), tries.map(() => 0x87))
  assert.deepEqual(await granted(ta.c, ['$share/g/tenants/a/#']), [1], 'its own tenant: allowed')
  const ta3 = await login('sh-ta', { protocolVersion: 4 })
  assert.deepEqual(await granted(ta3.c, tries), tries.map(() => 0x80), '3.1.1: 0x80')
  // tenant b's messages reach tenant b's own shared subscription, and nobody of tenant a
  assert.deepEqual(await granted(tb.c, ['$share/g/tenants/b/#']), [1])
  await tb.c.publishAsync('tenants/b/secret', 'b-only', { qos: 1 })
  await tb.c.publishAsync('tenants/a/hello', 'for-a', { qos: 1 }).catch(() => undefined)
  await waitFor('tenant b got its own', () => tb.got.length >= 1)
  await pause(200)
  assert.deepEqual(ta.got.map((p) => p.topic), [], 'nothing of tenant b at tenant a')
  assert.deepEqual(tb.got.map((p) => p.payload.toString()), ['b-only'])
  const refused = await g.metric('edgeway_refusals_total', { reason: 'acl_subscribe' })
  assert.ok(refused >= tries.length * 2)
  await end(ta.c, ta3.c, tb.c)
})

test('attack: a device cannot $share-subscribe to another device\'s command topic; its own commands work shared', async () => {
  const d2 = await login('sh-dev2')
  assert.deepEqual(await granted(d2.c, ['$share/g/devices/sh-dev/cmd/#', '$share/g/devices/+/cmd/#', '$share/g/devices/sh-dev2/cmd/#']), [0x87, 0x87, 1])
  const d23 = await login('sh-dev2', { protocolVersion: 4 })
  assert.deepEqual(await granted(d23.c, ['$share/g/devices/sh-dev/cmd/#']), [0x80])
  const victim = await login('sh-dev', { protocolVersion: 5 })
  await granted(victim.c, ['devices/sh-dev/cmd/#'])
  const ops = await login('sh-ops')
  await ops.c.publishAsync('devices/sh-dev/cmd/open', '{"id":"x1"}', { qos: 1 })
  await ops.c.publishAsync('devices/sh-dev2/cmd/blink', '{"id":"x2"}', { qos: 1 })
  await waitFor('the victim got its command, d2 its own', () => victim.got.length >= 1 && d2.got.length >= 1)
  await pause(200)
  assert.deepEqual(d2.got.map((p) => p.topic), ['devices/sh-dev2/cmd/blink'])
  assert.deepEqual(victim.got.map((p) => p.topic), ['devices/sh-dev/cmd/open'])
  await end(d2.c, d23.c, victim.c, ops.c)
})

test('a clean member that disconnects: the rest of the group gets everything after it', async () => {
  const a = await login('sh-obs1')
  const b = await login('sh-obs2')
  await granted(a.c, ['$share/dc/devices/+/telemetry'])
  await granted(b.c, ['$share/dc/devices/+/telemetry'])
  const aId = a.c.options.clientId
  await end(a.c)
  await g.waitLog((l) => l.msg === 'mqtt client disconnected' && l.clientId === aId)
  const sent = await telemetry(6)
  await waitFor('all at b', () => seqs(b.got).length >= 6)
  assert.deepEqual(seqs(b.got), sent)
  await end(b.c)
})
