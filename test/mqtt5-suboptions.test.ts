// MQTT 5 subscription options through the gateway, with MQTT.js 5 and mosquitto_sub -V 5: Subscription Identifiers on
// every kind of delivery (another client's publish, device telemetry that would otherwise take the fast path, the
// gateway's own publishes, retained messages on subscribe, one copy per identifier for overlapping subscriptions),
// No Local, Retain As Published and Retain Handling 0/1/2.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import mqtt, { type IClientOptions, type IPublishPacket, type IClientSubscribeOptions } from 'mqtt'
import { cliSecret, startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { collect, end, type MqttClient } from './helpers/mqtt.ts'
import { waitFor, pause } from './helpers/net.ts'
import { mosquittoClientsAvailable } from './helpers/mosquitto.ts'

let g: GatewayProc
let url: string
const secrets: Record<string, string> = {}

async function login(name: string, extra: IClientOptions = {}): Promise<{ c: MqttClient; got: IPublishPacket[] }> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5, clientId: `${name}:${Math.random().toString(16).slice(2, 8)}`, username: name, password: secrets[name]!, ...extra })
  const got = collect(c)
  await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', (e) => { c.end(true); reject(e) }) })
  return { c, got }
}

const sid = (si: number): IClientSubscribeOptions => ({ qos: 1, properties: { subscriptionIdentifier: si } })
const ids = (p: IPublishPacket): number[] => { const s = p.properties?.subscriptionIdentifier; return s === undefined ? [] : Array.isArray(s) ? s : [s] }

before(async () => {
  mosquittoClientsAvailable()
  g = await startGatewayProc({ roles: { lab: { rules: [{ allow: 'both', topic: 'lab/#' }] } } })
  url = `mqtt://127.0.0.1:${g.mqttPort}`
  secrets['so-dev'] = await addDevice(g, 'so-dev')
  for (const [name, role] of [['so-obs', 'observer'], ['so-lab', 'lab'], ['so-lab2', 'lab']] as const) secrets[name] = await cliSecret(g, ['client', 'add', name, '--role', role])
})
after(async () => { await g?.cleanup() })

test('Subscription Identifier on device telemetry (QoS 0 and 1, the fast path\'s topic) and on the gateway\'s own publishes (errors)', async () => {
  const obs = await login('so-obs')
  await obs.c.subscribeAsync('devices/+/telemetry', sid(11))
  await obs.c.subscribeAsync('devices/+/errors', sid(12))
  const dev = await login('so-dev', { protocolVersion: 4 })
  const dev5 = await login('so-dev')
  await dev5.c.subscribeAsync('devices/so-dev/errors', sid(13))
  await dev.c.publishAsync('devices/so-dev/telemetry', '{"t":1}', { qos: 0 })
  await dev.c.publishAsync('devices/so-dev/telemetry', '{"t":2}', { qos: 1 })
  await dev.c.publishAsync('devices/so-dev/telemetry', '{not json', { qos: 1 })
  await waitFor('the readings and the error at the observer, the error at the device', () => obs.got.length >= 4 && dev5.got.length >= 1)
  const tel = obs.got.filter((p) => p.topic === 'devices/so-dev/telemetry')
  // (a 3.1.1 publish the outbox refuses is still forwarded, as before)
  assert.deepEqual(tel.map((p) => [p.payload.toString(), ids(p)]), [['{"t":1}', [11]], ['{"t":2}', [11]], ['{not json', [11]]])
  const err = obs.got.find((p) => p.topic === 'devices/so-dev/errors')
  assert.ok(err, 'the gateway published the decode error')
  assert.deepEqual(ids(err), [12])
  assert.deepEqual(dev5.got.map((p) => [p.topic, ids(p)]), [['devices/so-dev/errors', [13]]])
  await end(obs.c, dev.c, dev5.c)
})

test('overlapping subscriptions with identifiers: each matching identifier is delivered (one copy per subscription, as Mosquitto does)', async () => {
  const sub = await login('so-lab')
  const pub = await login('so-lab2')
  await sub.c.subscribeAsync('lab/ov/#', { qos: 0, properties: { subscriptionIdentifier: 1 } })
  await sub.c.subscribeAsync('lab/ov/a', sid(2))
  await sub.c.subscribeAsync('lab/ov/+', { qos: 1 })
  await pub.c.publishAsync('lab/ov/a', 'x', { qos: 1 })
  await waitFor('copies', () => sub.got.length >= 3)
  await pause(200)
  const all = sub.got.flatMap(ids).sort()
  assert.deepEqual(all, [1, 2], 'identifiers 1 and 2 both delivered')
  assert.ok(sub.got.some((p) => p.qos === 1), 'the maximum QoS of the matching subscriptions is delivered')
  // the same message with the same identifier twice is still one copy (aedes' dedupe stays for that)
  const before = sub.got.length
  await pub.c.publishAsync('lab/ov/b', 'y', { qos: 1 })
  await waitFor('b copies', () => sub.got.length >= before + 2)
  await pause(200)
  assert.deepEqual(sub.got.slice(before).map((p) => ids(p)).sort(), [[], [1]])
  await end(sub.c, pub.c)
})

test('retained messages on subscribe carry the identifier; mosquitto_sub -V 5 -D subscribe subscription-identifier sees it', async () => {
  const pub = await login('so-lab2')
  await pub.c.publishAsync('lab/si/ret', 'r', { qos: 1, retain: true })
  const sub = await login('so-lab')
  await sub.c.subscribeAsync('lab/si/#', sid(21))
  await waitFor('retained', () => sub.got.length >= 1)
  assert.deepEqual([sub.got[0]!.retain, ids(sub.got[0]!)], [true, [21]])
  const ms = spawn('stdbuf', ['-oL', '/usr/bin/mosquitto_sub', '-h', '127.0.0.1', '-p', String(g.mqttPort), '-V', '5', '-q', '1', '-u', 'so-lab', '-P', secrets['so-lab']!,
    '-i', 'so-lab:mosq', '-t', 'lab/si/#', '-D', 'subscribe', 'subscription-identifier', '33', '-F', '%S %r %t %p'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  ms.stdout!.on('data', (d: Buffer) => { out += d.toString() })
  try {
    await waitFor('mosquitto_sub got the retained message', () => out.includes('lab/si/ret'))
    await pub.c.publishAsync('lab/si/live', 'l', { qos: 1 })
    await waitFor('and a live one', () => out.includes('lab/si/live'))
    assert.deepEqual(out.trim().split('\n'), ['33 1 lab/si/ret r', '33 0 lab/si/live l'])
  } finally {
    ms.kill('SIGTERM')
    await pub.c.publishAsync('lab/si/ret', '', { qos: 1, retain: true })
    await end(pub.c, sub.c)
  }
})

test('No Local: a subscriber does not get its own publishes back; others (and itself without the option) do', async () => {
  const a = await login('so-lab')
  const b = await login('so-lab2')
  await a.c.subscribeAsync('lab/nl/#', { qos: 1, nl: true })
  await b.c.subscribeAsync('lab/nl/#', { qos: 1 })
  await a.c.publishAsync('lab/nl/x', 'from-a', { qos: 1 })
  await b.c.publishAsync('lab/nl/x', 'from-b', { qos: 1 })
  await waitFor('b got both, a got b\'s', () => b.got.length >= 2 && a.got.length >= 1)
  await pause(200)
  assert.deepEqual(a.got.map((p) => p.payload.toString()), ['from-b'])
  assert.deepEqual(b.got.map((p) => p.payload.toString()).sort(), ['from-a', 'from-b'])
  await end(a.c, b.c)
})

test('Retain As Published: the retain flag of a live publish is kept only with the option', async () => {
  const keep = await login('so-lab')
  const clear = await login('so-lab')
  const pub = await login('so-lab2')
  await keep.c.subscribeAsync('lab/rap/#', { qos: 1, rap: true, rh: 2 })
  await clear.c.subscribeAsync('lab/rap/#', { qos: 1, rh: 2 })
  await pub.c.publishAsync('lab/rap/x', 'r', { qos: 1, retain: true })
  await pub.c.publishAsync('lab/rap/y', 'n', { qos: 1 })
  await waitFor('both', () => keep.got.length >= 2 && clear.got.length >= 2)
  assert.deepEqual(keep.got.map((p) => [p.topic, p.retain]), [['lab/rap/x', true], ['lab/rap/y', false]])
  assert.deepEqual(clear.got.map((p) => [p.topic, p.retain]), [['lab/rap/x', false], ['lab/rap/y', false]])
  await pub.c.publishAsync('lab/rap/x', '', { qos: 1, retain: true })
  await end(keep.c, clear.c, pub.c)
})

test('Retain Handling: 0 sends retained messages at every subscribe, 1 only for a new subscription, 2 never', async () => {
  const pub = await login('so-lab2')
  await pub.c.publishAsync('lab/rh/x', 'kept', { qos: 1, retain: true })
  const count = async (rh: 0 | 1 | 2): Promise<number[]> => {
    const c = await login('so-lab')
    const n: number[] = []
    for (let i = 0; i < 2; i++) {
      await c.c.subscribeAsync('lab/rh/#', { qos: 1, rh })
      await pause(250)
      n.push(c.got.length)
    }
    await end(c.c)
    return n
  }
  assert.deepEqual(await count(0), [1, 2], 'rh 0: at the subscribe and again at the resubscribe')
  assert.deepEqual(await count(1), [1, 1], 'rh 1: only the new subscription')
  assert.deepEqual(await count(2), [0, 0], 'rh 2: never')
  await pub.c.publishAsync('lab/rh/x', '', { qos: 1, retain: true })
  await end(pub.c)
})
