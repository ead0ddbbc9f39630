// The embedded broker as a broker: QoS, retained, will, persistent sessions across restarts, WebSocket,
// Mosquitto's own clients. Open-broker (lab) mode here; authentication and the ACL are in gateway-auth.test.ts.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { connect, connectCollecting, collect, end } from './helpers/mqtt.ts'
import { rawConnect, connectPacket } from './helpers/raw.ts'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { waitFor, pause } from './helpers/net.ts'
import { mosquittoClientsAvailable } from './helpers/mosquitto.ts'

let g: GatewayProc
let url: string

before(async () => {
  mosquittoClientsAvailable()
  g = await startGatewayProc({ mqtt: { openBroker: true } })
  url = `mqtt://127.0.0.1:${g.mqttPort}`
})
after(async () => { await g?.cleanup() })

test('open broker mode is logged loudly', async () => {
  await g.waitLog((l) => /OPEN BROKER MODE/.test(l.msg))
})

test('QoS 0, 1 and 2 publishes are acknowledged, stored and delivered to subscribers at the granted QoS', async () => {
  const sub = await connect(url, { clientId: 'q-sub' })
  const got = collect(sub)
  const granted = await sub.subscribeAsync('devices/q1/telemetry', { qos: 2 })
  assert.equal(granted[0]!.qos, 2)
  const before = await g.metric('edgeway_messages_in_total', { link: 'mqtt' })
  const pub = await connect(url, { clientId: 'q1' })
  for (const qos of [0, 1, 2] as const) await pub.publishAsync('devices/q1/telemetry', JSON.stringify({ qos }), { qos })
  await waitFor('3 messages', () => got.length >= 3 && got)
  assert.deepEqual(got.map((p) => [JSON.parse(p.payload.toString()).qos, p.qos]).sort(), [[0, 0], [1, 1], [2, 2]])
  assert.equal(await g.metric('edgeway_messages_in_total', { link: 'mqtt' }) - before, 3, 'all three are in the outbox')
  await end(sub, pub)
})

test('telemetry fast path: stored and acked with nobody subscribed; a live or offline persistent subscriber still gets every reading; keepalive holds for a publish-only client', async () => {
  const inbox = () => g.metric('edgeway_messages_in_total', { link: 'mqtt' })
  // Publish-only client with a 1 s keepalive: MQTT.js sends no PINGREQ while it publishes, so only the publishes
  // themselves keep the connection alive (aedes drops it after 1.5 x keepalive of silence).
  const pub = await connect(url, { clientId: 'fp1', keepalive: 1 })
  let closed = false
  pub.on('close', () => { closed = true })
  let n0 = await inbox()
  for (let i = 0; i < 30 && !closed; i++) {
    // a dropped connection would leave MQTT.js waiting for this ack for good: bounded
    await Promise.race([pub.publishAsync('devices/fp1/telemetry', JSON.stringify({ i }), { qos: 1 }), pause(2000)])
    await pause(100)
  }
  assert.equal(closed, false, 'still connected after 3 s of publishing without pings')
  await waitFor('30 stored', async () => (await inbox()) - n0 === 30)

  // An offline persistent session subscribed to all telemetry: readings queue for it.
  const sub = await connect(url, { clientId: 'fp-sub', clean: false })
  await sub.subscribeAsync('devices/+/telemetry', { qos: 1 })
  await end(sub)
  n0 = await inbox()
  for (let i = 0; i < 5; i++) await pub.publishAsync('devices/fp1/telemetry', JSON.stringify({ queued: i }), { qos: 1 })
  const { client: back, got } = await connectCollecting(url, { clientId: 'fp-sub', clean: false })
  await waitFor('5 queued readings delivered', () => got.filter((p) => 'queued' in JSON.parse(p.payload.toString())).length === 5)
  // Live as well, then unsubscribed: later readings are still stored and acked.
  for (let i = 0; i < 3; i++) await pub.publishAsync('devices/fp1/telemetry', JSON.stringify({ live: i }), { qos: 1 })
  await waitFor('3 live readings', () => got.filter((p) => 'live' in JSON.parse(p.payload.toString())).length === 3)
  await back.unsubscribeAsync('devices/+/telemetry')
  await end(back)
  for (let i = 0; i < 4; i++) await pub.publishAsync('devices/fp1/telemetry', JSON.stringify({ after: i }), { qos: 1 })
  await waitFor('all 12 stored', async () => (await inbox()) - n0 === 12)
  assert.equal(got.filter((p) => 'after' in JSON.parse(p.payload.toString())).length, 0)
  await end(pub)
})

test('retained messages reach later subscribers and survive a restart; empty payload clears them', async () => {
  const pub = await connect(url, { clientId: 'ret-pub' })
  await pub.publishAsync('devices/r1/state', '{"mode":"eco"}', { qos: 1, retain: true })
  await pub.publishAsync('devices/r2/state', '{"mode":"off"}', { qos: 1, retain: true })
  await pub.publishAsync('devices/r2/state', '', { qos: 1, retain: true })
  await end(pub)
  assert.equal(await g.stop(), 0)
  await g.start()
  const sub = await connect(url, { clientId: 'ret-sub' })
  const got = collect(sub)
  await sub.subscribeAsync('devices/+/state', { qos: 1 })
  await waitFor('retained r1', () => got.find((p) => p.topic === 'devices/r1/state'))
  await pause(200)
  assert.equal(got.filter((p) => p.topic === 'devices/r1/state' && p.retain && p.payload.toString() === '{"mode":"eco"}').length, 1)
  assert.equal(got.filter((p) => p.topic === 'devices/r2/state').length, 0, 'cleared retained message stays cleared')
  await end(sub)
})

test('last will is published when a client vanishes without DISCONNECT, not on a clean disconnect', async () => {
  const obs = await connect(url, { clientId: 'will-obs' })
  const seen = collect(obs)
  await obs.subscribeAsync('devices/w1/state', { qos: 1 })
  const polite = await connect(url, { clientId: 'w1a', will: { topic: 'devices/w1/state', payload: Buffer.from('polite'), qos: 1, retain: false } })
  await polite.endAsync()
  const dying = await connect(url, { clientId: 'w1b', will: { topic: 'devices/w1/state', payload: Buffer.from('{"online":false}'), qos: 1, retain: false } })
  ;(dying as unknown as { stream: { destroy(): void } }).stream.destroy()
  await waitFor('will', () => seen.find((p) => p.payload.toString() === '{"online":false}'), 10000)
  assert.equal(seen.filter((p) => p.payload.toString() === 'polite').length, 0)
  await end(obs, dying)
})

test('keepalive: a silent client is disconnected and its will fires', async () => {
  const obs = await connect(url, { clientId: 'ka-obs' })
  const seen = collect(obs)
  await obs.subscribeAsync('devices/ka/state', { qos: 1 })
  const raw = await rawConnect(g.mqttPort)
  raw.send(connectPacket('ka', { keepalive: 1, will: { topic: 'devices/ka/state', payload: Buffer.from('gone'), qos: 0, retain: false } }))
  assert.equal(((await raw.next('connack')) as { returnCode: number }).returnCode, 0)
  await raw.closed // 1.5 x keepalive without a packet
  await waitFor('will after keepalive timeout', () => seen.find((p) => p.payload.toString() === 'gone'), 5000)
  await end(obs)
})

test('persistent session: subscription and a QoS 1 message queued while offline survive a gateway restart', async () => {
  const clientId = 'sess-1'
  const s = await connect(url, { clientId, clean: false })
  await s.subscribeAsync('devices/sess-1/cmd/#', { qos: 1 })
  await s.endAsync()
  const pub = await connect(url, { clientId: 'sess-pub' })
  await pub.publishAsync('devices/sess-1/cmd/reboot', '{"id":"c1"}', { qos: 1 })
  await end(pub)
  assert.equal(await g.stop(), 0)
  await g.start()
  const { client: back, got, sessionPresent } = await connectCollecting(url, { clientId, clean: false })
  assert.equal(sessionPresent, true)
  await waitFor('queued command after restart', () => got.find((p) => p.topic === 'devices/sess-1/cmd/reboot' && p.payload.toString() === '{"id":"c1"}'))
  // and the restored subscription keeps working
  const pub2 = await connect(url, { clientId: 'sess-pub2' })
  await pub2.publishAsync('devices/sess-1/cmd/ping', '{"id":"c2"}', { qos: 1 })
  await waitFor('live command on restored subscription', () => got.find((p) => p.payload.toString() === '{"id":"c2"}'))
  await end(back, pub2)
})

test('zero-length client id with clean session off is rejected with code 2 (MQTT-3.1.3-8); with clean session on it is accepted', async () => {
  const a = await rawConnect(g.mqttPort)
  // mqtt-packet refuses to build this CONNECT, so build it with clean=1 and clear the flag: byte 9 is the
  // connect-flags byte (1 header byte, 1 length byte, 6 protocol-name bytes, 1 level byte).
  const bytes = mqttPacket.generate(connectPacket('', { clean: true }) as unknown as Packet)
  assert.equal(bytes[9]! & 0x02, 0x02)
  bytes[9] = bytes[9]! & ~0x02
  a.write(bytes)
  const ca = (await a.next('connack')) as { returnCode: number }
  assert.equal(ca.returnCode, 2)
  await a.closed
  const b = await rawConnect(g.mqttPort)
  b.send(connectPacket('', { clean: true }))
  assert.equal(((await b.next('connack')) as { returnCode: number }).returnCode, 0)
  b.socket.destroy()
})

test('MQTT over WebSocket', async () => {
  const ws = await connect(`ws://127.0.0.1:${g.wsPort}/mqtt`, { clientId: 'ws-dev' })
  const got = collect(ws)
  await ws.subscribeAsync('devices/ws-dev/cmd/#', { qos: 1 })
  const before = await g.metric('edgeway_messages_in_total', { link: 'mqtt' })
  await ws.publishAsync('devices/ws-dev/telemetry', '{"t":5}', { qos: 1 })
  assert.equal(await g.metric('edgeway_messages_in_total', { link: 'mqtt' }) - before, 1)
  await ws.publishAsync('devices/ws-dev/cmd/x', 'hi', { qos: 1 })
  await waitFor('ws loopback', () => got.length > 0)
  await end(ws)
})

test('Mosquitto clients (mosquitto_pub / mosquitto_sub) interoperate', async () => {
  const sub = spawn('/usr/bin/mosquitto_sub', ['-h', '127.0.0.1', '-p', String(g.mqttPort), '-i', 'mosq-sub', '-q', '2', '-t', 'devices/mosq/telemetry', '-C', '3', '-v'])
  let out = ''
  sub.stdout.on('data', (d: Buffer) => { out += d.toString() })
  await waitFor('mosquitto_sub connected', async () => (await g.metric('edgeway_mqtt_clients_connected')) >= 1 && g.logs.some((l) => l.clientId === 'mosq-sub'))
  for (const q of ['0', '1', '2']) {
    const r = spawnSync('/usr/bin/mosquitto_pub', ['-h', '127.0.0.1', '-p', String(g.mqttPort), '-i', 'mosq', '-q', q, '-t', 'devices/mosq/telemetry', '-m', `{"q":${q}}`])
    assert.equal(r.status, 0, r.stderr.toString())
  }
  const code = await new Promise<number | null>((resolve) => sub.on('exit', resolve))
  assert.equal(code, 0)
  assert.deepEqual(out.trim().split('\n').sort(), ['devices/mosq/telemetry {"q":0}', 'devices/mosq/telemetry {"q":1}', 'devices/mosq/telemetry {"q":2}'])
})

test('QoS 2: a retransmitted PUBLISH (PUBREC lost) is stored once', async () => {
  const before = await g.metric('edgeway_messages_in_total', { link: 'mqtt' })
  const c = await rawConnect(g.mqttPort)
  c.send(connectPacket('q2dup', { clean: false }))
  await c.next('connack')
  const pub = { cmd: 'publish', topic: 'devices/q2dup/telemetry', payload: Buffer.from('{"t":2}'), qos: 2, messageId: 5, dup: false, retain: false }
  c.send(pub)
  assert.equal(((await c.next('pubrec')) as { messageId: number }).messageId, 5)
  c.send({ ...pub, dup: true })
  assert.equal(((await c.next('pubrec')) as { messageId: number }).messageId, 5)
  c.send({ cmd: 'pubrel', messageId: 5 })
  assert.equal(((await c.next('pubcomp')) as { messageId: number }).messageId, 5)
  assert.equal(await g.metric('edgeway_messages_in_total', { link: 'mqtt' }) - before, 1)
  c.socket.destroy()
})

test('/metrics explains a commit: its phases (queue, decode, write, handback) and the event loop delay', async () => {
  const pub = await connect(url, { clientId: 'phases-1' })
  await pub.publishAsync('devices/phases-1/telemetry', '{"t":1}', { qos: 1 })
  await end(pub)
  for (const phase of ['queue', 'decode', 'write', 'handback']) {
    assert.ok(await g.metric('edgeway_ingest_phase_seconds_count', { phase }) >= 1, `phase ${phase} observed`)
  }
  assert.ok(await g.metric('edgeway_event_loop_delay_seconds_count') >= 1)
})
