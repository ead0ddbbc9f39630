// Shared subscriptions of persistent sessions (gateway/broker/shared-subscriptions.ts): a disconnected member is
// skipped while another is connected; with none connected its QoS 1 messages are queued in its session and arrive at
// its reconnect, also across a gateway restart (the membership is restored from the session store); a clean start
// ends the membership.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import mqtt, { type IClientOptions, type IPublishPacket } from 'mqtt'
import { cliSecret, startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { collect, end, type MqttClient } from './helpers/mqtt.ts'
import { waitFor, pause } from './helpers/net.ts'

let g: GatewayProc
let url: string
const secrets: Record<string, string> = {}
let dev: MqttClient

/** Connects with the collector attached before CONNACK (a resumed session's queue may arrive with it). */
async function login(name: string, extra: IClientOptions = {}): Promise<{ c: MqttClient; got: IPublishPacket[]; sessionPresent: boolean }> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5, clientId: `${name}:${Math.random().toString(16).slice(2, 8)}`, username: name, password: secrets[name]!, ...extra })
  const got = collect(c)
  const sessionPresent = await new Promise<boolean>((resolve, reject) => { c.once('connect', (p) => resolve(p.sessionPresent)); c.once('error', (e) => { c.end(true); reject(e) }) })
  return { c, got, sessionPresent }
}

/** A v5 (or 3.1.1) session that outlives its connection. */
const persistent = (clientId: string, v: 4 | 5 = 5): IClientOptions => v === 5
  ? { clientId, clean: false, properties: { sessionExpiryInterval: 600 } }
  : { clientId, clean: false, protocolVersion: 4 }

let seq = 0
async function telemetry(n: number): Promise<number[]> {
  const sent: number[] = []
  for (let i = 0; i < n; i++) { const k = ++seq; sent.push(k); await dev.publishAsync('devices/ss-dev/telemetry', JSON.stringify({ n: k }), { qos: 1 }) }
  return sent
}
const seqs = (got: IPublishPacket[]): number[] => got.filter((p) => p.topic === 'devices/ss-dev/telemetry').map((p) => (JSON.parse(p.payload.toString()) as { n: number }).n)

async function gone(c: MqttClient): Promise<void> {
  const id = c.options.clientId
  await end(c)
  await g.waitLog((l) => l.msg === 'mqtt client disconnected' && l.clientId === id)
  g.logs.splice(0, g.logs.length)
}

before(async () => {
  g = await startGatewayProc()
  url = `mqtt://127.0.0.1:${g.mqttPort}`
  secrets['ss-dev'] = await addDevice(g, 'ss-dev')
  for (const name of ['ss-p', 'ss-q']) secrets[name] = await cliSecret(g, ['client', 'add', name, '--role', 'observer'])
  dev = (await login('ss-dev', { protocolVersion: 4 })).c
})
after(async () => { await end(dev); await g?.cleanup() })

for (const v of [5, 4] as const) {
  test(`MQTT ${v === 5 ? 5 : '3.1.1'}: a disconnected persistent member is skipped while another is connected, queued for when none is, and resumes its membership at reconnect`, async () => {
    const group = `$share/ps${v}/devices/+/telemetry`
    const pid = `ss-p:persist${v}`
    let p = await login('ss-p', persistent(pid, v))
    const q = await login('ss-q', { protocolVersion: v })
    await p.c.subscribeAsync(group, { qos: 1 })
    await q.c.subscribeAsync(group, { qos: 1 })
    const first = await telemetry(4)
    await waitFor('4 split', () => seqs(p.got).length + seqs(q.got).length >= 4)
    assert.deepEqual([seqs(p.got).length, seqs(q.got).length], [2, 2])
    await gone(p.c)
    const whileAway = await telemetry(4)
    await waitFor('all 4 at the connected member', () => seqs(q.got).filter((n) => n > first.at(-1)!).length >= 4)
    assert.deepEqual(seqs(q.got).filter((n) => n > first.at(-1)!), whileAway)
    await gone(q.c)
    const queued = await telemetry(3)
    p = await login('ss-p', persistent(pid, v))
    assert.equal(p.sessionPresent, true)
    await waitFor('the queued 3 at the reconnected member', () => seqs(p.got).length >= 3)
    assert.deepEqual(seqs(p.got), queued)
    const after = await telemetry(2)
    await waitFor('new ones too: its membership is back', () => seqs(p.got).length >= 5)
    assert.deepEqual(seqs(p.got), [...queued, ...after])
    // a clean start ends the session, and the membership with it
    await end(p.c)
    const clean = await login('ss-p', { clientId: pid, clean: true, protocolVersion: v })
    await gone(clean.c)
    await telemetry(2)
    p = await login('ss-p', persistent(pid, v))
    assert.equal(p.sessionPresent, false)
    await pause(300)
    assert.equal(p.got.length, 0, 'nothing queued for a member whose session ended')
    await end(p.c)
  })
}

test('across a gateway restart: a disconnected member\'s shared subscription is restored from its session, queued for, and live again at reconnect', async () => {
  const pid = 'ss-p:restart'
  let p = await login('ss-p', persistent(pid))
  await p.c.subscribeAsync('$share/rs/devices/ss-dev/telemetry', { qos: 1, properties: { subscriptionIdentifier: 9 } })
  await gone(p.c)
  await end(dev)
  assert.equal(await g.stop(), 0)
  await g.start()
  dev = (await login('ss-dev', { protocolVersion: 4 })).c
  const queued = await telemetry(3)
  p = await login('ss-p', persistent(pid))
  assert.equal(p.sessionPresent, true)
  await waitFor('the 3 queued after the restart', () => seqs(p.got).length >= 3)
  assert.deepEqual(seqs(p.got), queued)
  assert.ok(p.got.every((m) => m.properties?.subscriptionIdentifier === 9 && m.qos === 1), 'queued copies keep its identifier and QoS')
  const live = await telemetry(2)
  await waitFor('live ones after the reconnect', () => seqs(p.got).length >= 5)
  assert.deepEqual(seqs(p.got), [...queued, ...live])
  await end(p.c)
})
