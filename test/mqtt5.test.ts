// MQTT 5 clients on every listener (TCP, TLS, WebSocket), with MQTT.js 5 and mosquitto_pub/sub -V 5: readings reach
// the outbox and an upstream, commands reach a v5 device, and every refusal carries its v5 reason code (CONNACK
// 0x85/0x86/0x87, PUBACK 0x87/0x99, SUBACK 0x87, DISCONNECT 0x8E/0x8B/0x95/0x98 with a reason string). The security
// cases of the v5 features (topic aliases, delayed wills, names aedes 2 cannot hold) are here too.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import mqtt, { type IClientOptions, type IConnackPacket, type IDisconnectPacket } from 'mqtt'
import { cliSecret, startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { connect, connectRefused, collect, end, type MqttClient } from './helpers/mqtt.ts'
import { freePort, waitFor, tempDir, scaled } from './helpers/net.ts'
import { rawConnect, connectPacket } from './helpers/raw.ts'
import { startMosquitto, mosquittoClientsAvailable, type Mosquitto } from './helpers/mosquitto.ts'

let g: GatewayProc
let mosq: Mosquitto
let upstream: MqttClient
const upstreamGot: { topic: string; payload: string }[] = []
let url: string
const secrets: Record<string, string> = {}
const tlsPort = await freePort()
const certs = tempDir('edgeway-certs-')
let opsSecret = ''

const V5 = { protocolVersion: 5 } as const
const creds = (id: string, extra: IClientOptions = {}): IClientOptions => ({ ...V5, clientId: `${id}:${Math.random().toString(16).slice(2, 8)}`, username: id, password: secrets[id]!, ...extra })
const inbox = (): Promise<number> => g.metric('edgeway_messages_in_total', { link: 'mqtt' })
const refusals = (reason: string): Promise<number> => g.metric('edgeway_refusals_total', { reason })

/** Connects and resolves with the client and its CONNACK (properties included). */
async function connect5(u: string, opts: IClientOptions): Promise<{ c: MqttClient; connack: IConnackPacket }> {
  const c = mqtt.connect(u, { reconnectPeriod: 0, connectTimeout: 5000, ...V5, ...opts })
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    c.once('connect', resolve)
    c.once('error', (e) => { c.end(true); reject(e) })
  })
  return { c, connack }
}

/** The next DISCONNECT from the gateway (rejects if the connection closes without one). */
function nextDisconnect(c: MqttClient): Promise<IDisconnectPacket> {
  return new Promise((resolve, reject) => {
    c.once('disconnect', resolve)
    c.once('close', () => setTimeout(() => reject(new Error('closed without a DISCONNECT')), 50))
  })
}

before(async () => {
  mosquittoClientsAvailable()
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1',
    '-keyout', join(certs.dir, 'key.pem'), '-out', join(certs.dir, 'cert.pem')], { stdio: 'ignore' })
  mosq = await startMosquitto()
  upstream = await connect(`mqtt://127.0.0.1:${mosq.port}`, { clientId: 'v5-upstream-collector' })
  await upstream.subscribeAsync('#', { qos: 1 })
  upstream.on('message', (topic, payload) => { upstreamGot.push({ topic, payload: payload.toString() }) })
  g = await startGatewayProc({
    mqtt: { tls: { enabled: true, host: '127.0.0.1', port: tlsPort, cert: join(certs.dir, 'cert.pem'), key: join(certs.dir, 'key.pem') }, maxPacketSize: 4096 },
    upstreams: [{ name: 'ref', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, reconnectMinMs: 100, reconnectMaxMs: 1000, maxInflight: 100 }],
  })
  url = `mqtt://127.0.0.1:${g.mqttPort}`
  for (const id of ['v5a', 'v5b', 'v5c', 'v5w', 'v5r', 'v5t']) secrets[id] = await addDevice(g, id)
  opsSecret = await cliSecret(g, ['client', 'add', 'ops5', '--role', 'operator'])
})
after(async () => { await end(upstream); await g?.cleanup(); await mosq?.stop(); certs.cleanup() })

test('v5 on TCP, TLS and WebSocket: CONNACK advertises the limits, readings are acked 0x00 after the commit and reach the upstream', async () => {
  const targets: [string, IClientOptions][] = [
    [url, {}],
    [`mqtts://127.0.0.1:${tlsPort}`, { rejectUnauthorized: false }],
    [`ws://127.0.0.1:${g.wsPort}/mqtt`, {}],
  ]
  for (const [u, extra] of targets) {
    const { c, connack } = await connect5(u, creds('v5a', extra))
    assert.equal(connack.reasonCode, 0, u)
    assert.equal(connack.properties?.topicAliasMaximum, 32, u)
    assert.equal(connack.properties?.maximumPacketSize, 4096 + 3, u)
    const n0 = await inbox()
    const mark = `${u.split(':')[0]}-${Date.now()}`
    const ack = await c.publishAsync('devices/v5a/telemetry', JSON.stringify({ t: 1, mark }), { qos: 1 })
    assert.equal((ack as { reasonCode?: number } | undefined)?.reasonCode ?? 0, 0)
    assert.equal(await inbox() - n0, 1, `${u}: stored before the PUBACK`)
    await waitFor(`${u}: reading upstream`, () => upstreamGot.find((m) => m.payload.includes(mark)), scaled(10000))
    await end(c)
  }
})

test('a command reaches a v5 device, with its response topic and correlation data; the device answers on it', async () => {
  const dev = (await connect5(url, creds('v5b'))).c
  const got = collect(dev)
  await dev.subscribeAsync('devices/v5b/cmd/#', { qos: 1 })
  const ops = (await connect5(url, { clientId: 'ops5-1', username: 'ops5', password: opsSecret })).c
  const opsGot = collect(ops)
  await ops.subscribeAsync('devices/v5b/cmd/+/result', { qos: 1 })
  await ops.publishAsync('devices/v5b/cmd/reboot', '{"id":"r1"}', { qos: 1, properties: { responseTopic: 'devices/v5b/cmd/reboot/result', correlationData: Buffer.from('c-1') } })
  const cmd = await waitFor('command at the v5 device', () => got.find((p) => p.topic === 'devices/v5b/cmd/reboot'))
  assert.equal(cmd.payload.toString(), '{"id":"r1"}')
  assert.equal(cmd.properties?.responseTopic, 'devices/v5b/cmd/reboot/result')
  assert.equal(cmd.properties?.correlationData?.toString(), 'c-1')
  await dev.publishAsync(cmd.properties!.responseTopic!, '{"id":"r1","ok":true}', { qos: 1, properties: { correlationData: cmd.properties!.correlationData! } })
  const res = await waitFor('result at the sender', () => opsGot.find((p) => p.topic === 'devices/v5b/cmd/reboot/result'))
  assert.equal(res.properties?.correlationData?.toString(), 'c-1')
  await end(dev, ops)
})

test('CONNACK reason codes: 0x86 bad credentials, 0x87 client id of another identity, 0x85 a client id aedes cannot hold', async () => {
  assert.equal((await connectRefused(url, { ...V5, username: 'v5a', password: 'nope' })).code, 0x86)
  assert.equal((await connectRefused(url, { ...V5, clientId: 'v5b', username: 'v5a', password: secrets.v5a! })).code, 0x87)
  assert.equal((await connectRefused(url, { ...V5, clientId: 'x' })).code, 0x87, 'anonymous access is off')
  for (const id of ['constructor', '__proto__', 'toString']) {
    assert.equal((await connectRefused(url, { ...V5, clientId: id, username: 'v5a', password: secrets.v5a! })).code, 0x85, id)
    assert.equal((await connectRefused(url, { clientId: id, username: 'v5a', password: secrets.v5a! })).code, 2, `${id} (3.1.1)`)
  }
  // the gateway is still up
  await end((await connect5(url, creds('v5a'))).c)
})

test('PUBACK 0x87 for an ACL refusal and 0x99 for a payload that does not decode, the connection stays up (fast path and aedes path)', async () => {
  const { c } = await connect5(url, creds('v5c'))
  let closed = false
  c.on('close', () => { closed = true })
  const acl0 = await refusals('acl_publish')
  const n0 = await inbox()
  await assert.rejects(c.publishAsync('devices/v5a/telemetry', '{"t":1}', { qos: 1 }), (e: Error & { code?: number }) => e.code === 0x87)
  assert.equal(await refusals('acl_publish') - acl0, 1)
  // fast path: nobody subscribes to telemetry
  const dec0 = await refusals('decode')
  await assert.rejects(c.publishAsync('devices/v5c/telemetry', '{"t":', { qos: 1 }), (e: Error & { code?: number }) => e.code === 0x99)
  // aedes path: QoS 2
  await assert.rejects(c.publishAsync('devices/v5c/telemetry', '{"t": nope}', { qos: 2 }), (e: Error & { code?: number }) => e.code === 0x99)
  assert.equal(await refusals('decode') - dec0, 2)
  await c.publishAsync('devices/v5c/telemetry', '{"t":2}', { qos: 1 })
  await c.publishAsync('devices/v5c/telemetry', '{"t":3}', { qos: 2 })
  assert.equal(await inbox() - n0, 2, 'only the good readings are stored')
  assert.equal(closed, false)
  // with a telemetry subscriber the fast path is off: the aedes path answers 0x99 too
  const ops = (await connect5(url, { clientId: 'ops5-2', username: 'ops5', password: opsSecret })).c
  await ops.subscribeAsync('devices/+/telemetry', { qos: 1 })
  await assert.rejects(c.publishAsync('devices/v5c/telemetry', '{"t":', { qos: 1 }), (e: Error & { code?: number }) => e.code === 0x99)
  assert.equal(closed, false)
  await end(c, ops)
})

test('SUBACK carries a code per filter: 0x87 for the refused one', async () => {
  const { c } = await connect5(url, creds('v5c'))
  // MQTT.js rejects when any filter is refused; the SUBACK is on the error
  const err = await c.subscribeAsync({ 'devices/v5c/cmd/#': { qos: 1 }, 'devices/v5a/cmd/#': { qos: 1 }, 'devices/v5c/errors': { qos: 0 } }).then(() => null, (e: Error & { packet?: { granted?: number[] } }) => e)
  assert.deepEqual(err?.packet?.granted, [1, 0x87, 0])
  await end(c)
})

test('shared subscriptions do not get around the ACL: refused for a device on another device\'s topics (3.1.1 0x80, v5 0x87), granted to the inner filter\'s reader', async () => {
  const granted = async (opts: IClientOptions, filters: string[]): Promise<number[] | undefined> => {
    const c = await connect(url, opts)
    const g2 = await c.subscribeAsync(filters, { qos: 1 }).then((x) => x.map((y) => y.qos), (e: Error & { packet?: { granted?: number[] } }) => e.packet?.granted)
    await end(c)
    return g2
  }
  assert.deepEqual(await granted({ ...creds('v5c'), protocolVersion: 4 }, ['$share/g/devices/v5a/cmd/#']), [0x80])
  assert.deepEqual(await granted({ ...creds('v5c'), protocolVersion: 4 }, ['$share/g/devices/+/telemetry']), [0x80])
  assert.deepEqual(await granted(creds('v5c'), ['$share/g/devices/v5a/cmd/#', 'devices/v5c/cmd/#']), [0x87, 1])
  assert.deepEqual(await granted({ ...V5, clientId: 'ops5-sh', username: 'ops5', password: opsSecret }, ['$share/g/devices/+/telemetry']), [1])
})

test('DISCONNECT 0x8E with a reason string on takeover; 0x98 on revocation', async () => {
  const id = 'v5r:take'
  const first = (await connect5(url, creds('v5r', { clientId: id }))).c
  const gone = nextDisconnect(first)
  const second = (await connect5(url, creds('v5r', { clientId: id }))).c
  const d = await gone
  assert.equal(d.reasonCode, 0x8e)
  assert.match(d.properties?.reasonString ?? '', /taken over/)
  const revoked = nextDisconnect(second)
  await g.cli(['device', 'rotate-secret', 'v5r'])
  const r = await revoked
  assert.equal(r.reasonCode, 0x98)
  assert.match(r.properties?.reasonString ?? '', /revoked/)
  await end(first, second)
})

test('topic aliases: a device aliases its telemetry topic (fast path and aedes path); an alias to a refused topic is refused every time', async () => {
  const { c } = await connect5(url, creds('v5t'))
  const n0 = await inbox()
  await c.publishAsync('devices/v5t/telemetry', '{"t":1}', { qos: 1, properties: { topicAlias: 3 } })
  for (let i = 0; i < 3; i++) await c.publishAsync('', JSON.stringify({ t: i }), { qos: 1, properties: { topicAlias: 3 } })
  assert.equal(await inbox() - n0, 4)
  // an alias registered on another device's topic: refused when registered and when used
  await assert.rejects(c.publishAsync('devices/v5a/telemetry', '{"t":1}', { qos: 1, properties: { topicAlias: 4 } }), (e: Error & { code?: number }) => e.code === 0x87)
  await assert.rejects(c.publishAsync('', '{"t":1}', { qos: 1, properties: { topicAlias: 4 } }), (e: Error & { code?: number }) => e.code === 0x87)
  // the aedes path (QoS 2) resolves the alias the fast path registered
  await c.publishAsync('', '{"t":9}', { qos: 2, properties: { topicAlias: 3 } })
  assert.equal(await inbox() - n0, 5)
  await end(c)
})

test('will delay: the will arrives after the delay without the Will Delay Interval property; a reconnect cancels it; revocation cancels it', async () => {
  const ops = (await connect5(url, { clientId: 'ops5-3', username: 'ops5', password: opsSecret })).c
  const got = collect(ops)
  await ops.subscribeAsync('devices/v5w/state', { qos: 1 })
  const will = (id: string, delay = 1) => ({ ...creds('v5w', { clientId: id }), properties: { sessionExpiryInterval: 30 }, will: { topic: 'devices/v5w/state', payload: Buffer.from(`gone ${id}`), qos: 1 as const, retain: false, properties: { willDelayInterval: delay } } })
  // 1. delayed, then published, without property 0x18
  const a = (await connect5(url, will('v5w:a'))).c
  a.stream.destroy()
  const t0 = Date.now()
  const w = await waitFor('delayed will', () => got.find((p) => p.payload.toString() === 'gone v5w:a'), scaled(10000))
  assert.ok(Date.now() - t0 >= 900, 'not before the delay')
  assert.equal((w.properties as Record<string, unknown> | undefined)?.willDelayInterval, undefined)
  // 2. a reconnect within the delay cancels it
  const b = (await connect5(url, will('v5w:b'))).c
  b.stream.destroy()
  const b2 = (await connect5(url, { ...creds('v5w', { clientId: 'v5w:b' }), clean: false, properties: { sessionExpiryInterval: 30 } })).c
  // 3. revoked while the will waits: never published
  const c = (await connect5(url, will('v5w:c', 6))).c
  c.stream.destroy()
  const t1 = Date.now()
  secrets.v5w = await cliSecret(g, ['device', 'rotate-secret', 'v5w'])
  assert.ok(Date.now() - t1 < 5500, 'revoked within the delay')
  await new Promise((r) => setTimeout(r, t1 + 7000 - Date.now()))
  assert.equal(got.find((p) => p.payload.toString() === 'gone v5w:b'), undefined, 'cancelled by the reconnect')
  assert.equal(got.find((p) => p.payload.toString() === 'gone v5w:c'), undefined, 'cancelled by the revocation')
  await end(ops, b2)
})

test('a packet over mqtt.maxPacketSize: DISCONNECT 0x95 with the reason, counted once', async () => {
  const { c } = await connect5(url, creds('v5a'))
  const before = await refusals('packet_too_large')
  const gone = nextDisconnect(c)
  c.publish('devices/v5a/telemetry', Buffer.alloc(5000, 0x41), { qos: 1 })
  const d = await gone
  assert.equal(d.reasonCode, 0x95)
  assert.match(d.properties?.reasonString ?? '', /exceeds mqtt.maxPacketSize/)
  await waitFor('counted', async () => (await refusals('packet_too_large')) - before === 1)
  await new Promise((r) => setTimeout(r, 200))
  assert.equal(await refusals('packet_too_large') - before, 1)
  assert.equal(await refusals('malformed_packet') >= 0, true)
  await end(c)
})

test('a subscription filter aedes cannot hold ("constructor", "__proto__") closes that connection, not the gateway', { timeout: scaled(20000) }, async () => {
  for (const f of ['constructor', '__proto__']) {
    for (const v of [4, 5] as const) {
      const c = await connect(url, { ...creds('v5a'), protocolVersion: v })
      const closed = new Promise<void>((resolve) => c.once('close', () => resolve()))
      c.subscribe([f, 'devices/v5a/cmd/x'], { qos: 0 })
      await closed
      await end(c)
    }
  }
  await end((await connect5(url, creds('v5a'))).c)
})

test('mosquitto_pub -V 5 and mosquitto_sub -V 5', async () => {
  const sub = spawn('/usr/bin/mosquitto_sub', ['-V', '5', '-h', '127.0.0.1', '-p', String(g.mqttPort), '-i', 'ops5:mosq', '-u', 'ops5', '-P', opsSecret, '-q', '1', '-t', 'devices/v5a/telemetry', '-C', '1', '-v'])
  let out = ''
  sub.stdout.on('data', (d: Buffer) => { out += d.toString() })
  await new Promise((r) => setTimeout(r, scaled(500)))
  const n0 = await inbox()
  const r = spawnSync('/usr/bin/mosquitto_pub', ['-V', '5', '-h', '127.0.0.1', '-p', String(g.mqttPort), '-i', 'v5a:mosq', '-u', 'v5a', '-P', secrets.v5a!, '-q', '1', '-t', 'devices/v5a/telemetry', '-m', '{"t":42}'], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(await inbox() - n0, 1)
  await waitFor('mosquitto_sub got it', () => out.includes('{"t":42}'), scaled(5000))
  sub.kill()
  const bad = spawnSync('/usr/bin/mosquitto_pub', ['-V', '5', '-h', '127.0.0.1', '-p', String(g.mqttPort), '-u', 'v5a', '-P', 'wrong', '-t', 'devices/v5a/telemetry', '-m', 'x'], { encoding: 'utf8' })
  assert.notEqual(bad.status, 0)
  assert.match(bad.stderr + bad.stdout, /Bad user name or password/i)
})

test('session expiry is persisted: a session lives for its interval, across a restart; expired, it is gone (while down, or after the restart)', { timeout: scaled(60000) }, async () => {
  const open = async (id: string, interval: number): Promise<{ c: MqttClient; present: boolean }> => {
    const { c, connack } = await connect5(url, { ...creds('v5a', { clientId: id }), clean: false, properties: { sessionExpiryInterval: interval } })
    return { c, present: connack.sessionPresent }
  }
  const ids = { long: 'v5a:long', short: 'v5a:short', mid: 'v5a:mid' }
  const intervals = { long: 120, short: 1, mid: 15 }
  for (const k of ['long', 'short', 'mid'] as const) {
    const { c } = await open(ids[k], intervals[k])
    await c.subscribeAsync(`devices/v5a/cmd/${k}`, { qos: 1 })
    c.stream.destroy()
  }
  const t0 = Date.now()
  await g.stop()
  await new Promise((r) => setTimeout(r, 1500))
  await g.start()
  assert.ok(Date.now() - t0 < 13000, 'restarted before the mid session expires')
  const ops = (await connect5(url, { clientId: 'ops5-s', username: 'ops5', password: opsSecret })).c
  for (const k of ['long', 'short', 'mid'] as const) await ops.publishAsync(`devices/v5a/cmd/${k}`, `{"id":"${k}"}`, { qos: 1 })
  await new Promise((r) => setTimeout(r, Math.max(0, t0 + 16500 - Date.now())))
  for (const k of ['long', 'short', 'mid'] as const) {
    // (expiry 0 here would make aedes drop the queue: it treats Clean Start 0 + Session Expiry 0 as a clean session)
    const c = mqtt.connect(url, { reconnectPeriod: 0, ...creds('v5a', { clientId: ids[k] }), clean: false, properties: { sessionExpiryInterval: 60 } })
    const got = collect(c)
    const present = await new Promise<boolean>((resolve, reject) => { c.once('connect', (p) => resolve(p.sessionPresent)); c.once('error', reject) })
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(present, k === 'long', `${k}: session present`)
    assert.deepEqual(got.map((p) => p.payload.toString()), k === 'long' ? ['{"id":"long"}'] : [], `${k}: queued commands`)
    await end(c)
  }
  await end(ops)
})

test('message expiry: a queued command and a retained message are dropped once expired, across a restart; a live one arrives with its remaining interval', { timeout: scaled(60000) }, async () => {
  const dev = { ...creds('v5b', { clientId: 'v5b:exp' }), clean: false, properties: { sessionExpiryInterval: 300 } }
  const first = (await connect5(url, dev)).c
  await first.subscribeAsync('devices/v5b/cmd/+', { qos: 1 })
  first.stream.destroy()
  const ops = (await connect5(url, { clientId: 'ops5-e', username: 'ops5', password: opsSecret })).c
  await ops.publishAsync('devices/v5b/cmd/short', '{"id":"short"}', { qos: 1, properties: { messageExpiryInterval: 1 } })
  await ops.publishAsync('devices/v5b/cmd/long', '{"id":"long"}', { qos: 1, properties: { messageExpiryInterval: 120 } })
  await end(ops)
  const d2 = (await connect5(url, creds('v5b'))).c
  await d2.publishAsync('devices/v5b/state', '{"v":1}', { qos: 1, retain: true, properties: { messageExpiryInterval: 1 } })
  await end(d2)
  await g.stop()
  await new Promise((r) => setTimeout(r, 2000))
  await g.start()
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...dev })
  const got = collect(c)
  await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject) })
  await waitFor('the live command', () => got.find((p) => p.topic === 'devices/v5b/cmd/long'))
  await new Promise((r) => setTimeout(r, 300))
  assert.deepEqual(got.map((p) => p.topic), ['devices/v5b/cmd/long'], 'the expired command is not delivered')
  const left = got[0]!.properties?.messageExpiryInterval ?? 0
  assert.ok(left > 100 && left < 120, `remaining interval ${left}`)
  const obs = (await connect5(url, { clientId: 'ops5-r', username: 'ops5', password: opsSecret })).c
  const seen = collect(obs)
  await obs.subscribeAsync('devices/v5b/state', { qos: 1 })
  await new Promise((r) => setTimeout(r, 500))
  assert.deepEqual(seen, [], 'the expired retained message is not delivered')
  await end(c, obs)
})

test('the client\'s Maximum Packet Size: a larger PUBLISH is not sent to it (dropped and counted), smaller ones are', async () => {
  const dev = (await connect5(url, creds('v5c', { properties: { maximumPacketSize: 200 } }))).c
  const got = collect(dev)
  await dev.subscribeAsync('devices/v5c/cmd/+', { qos: 1 })
  const ops = (await connect5(url, { clientId: 'ops5-m', username: 'ops5', password: opsSecret })).c
  const before = await refusals('client_max_packet_size')
  await ops.publishAsync('devices/v5c/cmd/big', JSON.stringify({ id: 'big', args: 'x'.repeat(400) }), { qos: 1 })
  await ops.publishAsync('devices/v5c/cmd/big0', JSON.stringify({ id: 'big0', args: 'x'.repeat(400) }), { qos: 0 })
  await ops.publishAsync('devices/v5c/cmd/small', '{"id":"small"}', { qos: 1, properties: { userProperties: { a: 'b' } } })
  await waitFor('small command', () => got.find((p) => p.topic === 'devices/v5c/cmd/small'))
  await new Promise((r) => setTimeout(r, 300))
  assert.deepEqual(got.map((p) => p.topic), ['devices/v5c/cmd/small'])
  assert.equal(await refusals('client_max_packet_size') - before, 2)
  await end(dev, ops)
})

test('inbound QoS 2 state: a clean session\'s ends with it (aedes 2 keeps it); a persistent session\'s survives (3.1.1 clients)', async () => {
  const rows = (id: string): number => {
    const db = new Database(join(g.dataDir, 'broker.db'), { readonly: true, fileMustExist: true })
    try { return (db.prepare('SELECT count(*) AS n FROM mqtt_incoming WHERE client_id = ?').get(id) as { n: number }).n } finally { db.close() }
  }
  for (const clean of [true, false]) {
    const id = `v5c:q2${clean ? 'c' : 'p'}`
    const c = await rawConnect(g.mqttPort)
    c.send(connectPacket(id, { clean, username: 'v5c', password: Buffer.from(secrets.v5c!) }))
    assert.equal(((await c.next('connack')) as { returnCode: number }).returnCode, 0)
    // PUBREC arrives, PUBREL is never sent: the packet stays stored until the session ends
    c.send({ cmd: 'publish', topic: 'devices/v5c/state', payload: Buffer.from('x'), qos: 2, messageId: 7, dup: false, retain: false })
    await c.next('pubrec')
    c.socket.destroy()
    await c.closed
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(rows(id), clean ? 0 : 1, clean ? 'a clean session leaves nothing' : 'a persistent session keeps it')
  }
})

test('DISCONNECT 0x8B with a reason string on shutdown (last: stops the gateway)', async () => {
  const { c } = await connect5(url, creds('v5a'))
  const gone = nextDisconnect(c)
  await g.stop()
  const d = await gone
  assert.equal(d.reasonCode, 0x8b)
  assert.match(d.properties?.reasonString ?? '', /shutting down/)
  await end(c)
})

