// The trust boundary, probed as a hostile client against the real gateway: each identity is exactly who it logged in
// as (client ids, wills, anonymous mode), loses its rights the moment they are revoked, cannot leave another device's
// presence wrong, and cannot guess secrets faster than the throttle allows.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { cliSecret, startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { connect, connectRefused, connectCollecting, collect, end, type MqttClient } from './helpers/mqtt.ts'
import { rawConnect, connectPacket } from './helpers/raw.ts'
import { waitFor, scaled } from './helpers/net.ts'
import { SqlitePersistence } from '../gateway/broker/persistence/store.ts'

let g: GatewayProc
let url: string
const secrets: Record<string, string> = {}
const LOCK_SECONDS = 2

before(async () => {
  g = await startGatewayProc({ mqtt: { loginThrottle: { budget: 5, lockSeconds: LOCK_SECONDS } } })
  url = `mqtt://127.0.0.1:${g.mqttPort}`
  for (const id of ['alice', 'bob', 'carol', 'gone-1', 'rot-1', 'flaky', 'locked-1']) secrets[id] = await addDevice(g, id)
})
after(async () => { await g?.cleanup() })

const as = (id: string, clientId: string, extra: object = {}) => ({ clientId, username: id, password: secrets[id]!, ...extra })
const closedOf = (c: MqttClient): Promise<void> => new Promise((resolve) => { if (!c.connected) resolve(); c.once('close', () => resolve()) })

test('1. a device cannot take another device\'s client id: B stays connected and keeps its session', async () => {
  const { client: b } = await connectCollecting(url, as('bob', 'bob', { clean: false }))
  await b.subscribeAsync('devices/bob/cmd/#', { qos: 1 })
  let bClosed = false
  b.on('close', () => { bClosed = true })
  const before = await g.metric('edgeway_refusals_total', { reason: 'client_id' })
  assert.equal((await connectRefused(url, as('alice', 'bob'))).code, 5, 'client id of another device: not authorized')
  assert.equal((await connectRefused(url, as('alice', 'bob:x'))).code, 5, "another device's namespace too")
  assert.equal((await connectRefused(url, as('alice', 'mallory-1'))).code, 5, 'a device uses its own id or id:<suffix> only')
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'client_id' }) - before, 3)
  await g.waitLog((l) => l.reason === 'client_id' && /must use client id "alice"/.test(l.msg))
  assert.equal(bClosed, false, 'B was not kicked off')
  assert.ok(b.connected)
  // B's stored session survives: a command queued while B is away is delivered when it comes back.
  await end(b)
  const op = await connect(url, { clientId: 'op-1', username: 'ops', password: await cliSecret(g, ['client', 'add', 'ops', '--role', 'operator']) })
  await op.publishAsync('devices/bob/cmd/blink', '{"id":"c1"}', { qos: 1 })
  await end(op)
  const { client: back, got, sessionPresent } = await connectCollecting(url, as('bob', 'bob', { clean: false }))
  assert.equal(sessionPresent, true)
  await waitFor('queued command', () => got.find((p) => p.topic === 'devices/bob/cmd/blink'))
  await end(back)
})

test('2. a will on another device\'s topics is refused at CONNECT', async () => {
  const before = await g.metric('edgeway_refusals_total', { reason: 'acl_will' })
  const reboot = await connectRefused(url, as('alice', 'alice:w1', { will: { topic: 'devices/bob/cmd/reboot', payload: Buffer.from('{}'), qos: 1, retain: true } }))
  assert.equal(reboot.code, 5)
  const state = await connectRefused(url, as('alice', 'alice:w2', { will: { topic: 'devices/bob/state', payload: Buffer.from('{"firmware":"evil"}'), qos: 1, retain: true } }))
  assert.equal(state.code, 5)
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'acl_will' }) - before, 2)
  // its own state topic is fine
  await end(await connect(url, as('alice', 'alice:w3', { will: { topic: 'devices/alice/state', payload: Buffer.from('{"online":false}'), qos: 1, retain: true } })))
})

test('3. an integration client gets what its role allows, and nothing of a device\'s identity', async () => {
  const secret = await cliSecret(g, ['client', 'add', 'ha', '--role', 'observer'])
  assert.equal((await connectRefused(url, { clientId: 'alice', username: 'ha', password: secret })).code, 5, "a device's client id is the device's")
  const raw = await rawConnect(g.mqttPort)
  raw.send(connectPacket('homeassistant-raw', { username: 'ha', password: Buffer.from(secret) }))
  assert.equal(((await raw.next('connack')) as { returnCode: number }).returnCode, 0)
  raw.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'devices/+/telemetry', qos: 1 }, { topic: '#', qos: 1 }, { topic: 'devices/+/state', qos: 0 }, { topic: 'devices/carol/cmd/#', qos: 1 }] })
  assert.deepEqual(((await raw.next('suback')) as { granted: number[] }).granted, [1, 128, 0, 128])
  raw.socket.destroy()
  const c = await connect(url, { clientId: 'homeassistant-1', username: 'ha', password: secret })
  await c.subscribeAsync('devices/+/telemetry', { qos: 1 })
  const got = collect(c)
  const dev = await connect(url, as('carol', 'carol'))
  await dev.publishAsync('devices/carol/telemetry', '{"t":1}', { qos: 1 })
  await waitFor('telemetry seen by the observer', () => got.find((p) => p.topic === 'devices/carol/telemetry'))
  const closed = closedOf(c)
  c.publish('devices/carol/cmd/unlock', '{}', { qos: 1 })
  await closed
  await g.waitLog((l) => l.reason === 'acl_publish' && l.client === 'ha')
  await end(c, dev)
})

test('4. remove disconnects at once, refuses the next CONNECT and purges session and retained state', async () => {
  const d = await connect(url, as('gone-1', 'gone-1', { clean: false }))
  await d.subscribeAsync('devices/gone-1/cmd/#', { qos: 1 })
  await d.publishAsync('devices/gone-1/state', '{"firmware":"1.0"}', { qos: 1, retain: true })
  const closed = closedOf(d)
  const t0 = Date.now()
  const r = await g.cli(['device', 'remove', 'gone-1'])
  assert.equal(r.code, 0, r.stderr)
  await Promise.race([closed, new Promise((_r, reject) => setTimeout(() => reject(new Error('still connected')), scaled(1000) + (Date.now() - t0)))])
  const inBefore = await g.metric('edgeway_messages_in_total', { link: 'mqtt' })
  assert.equal((await connectRefused(url, as('gone-1', 'gone-1'))).code, 4)
  assert.equal(await g.metric('edgeway_messages_in_total', { link: 'mqtt' }), inBefore)
  await g.waitLog((l) => l.msg === 'mqtt access revoked' && l.id === 'gone-1' && (l.purgedSessions as number) >= 1)
  // the retained state is gone for every later subscriber
  const obs = await connect(url, { clientId: 'obs-4', username: 'ha', password: await cliSecret(g, ['client', 'rotate-secret', 'ha']) })
  const got = collect(obs)
  await obs.subscribeAsync('devices/+/state', { qos: 1 })
  await new Promise((r) => setTimeout(r, scaled(300)))
  assert.equal(got.filter((p) => p.topic === 'devices/gone-1/state').length, 0, 'no retained state of a removed device')
  await end(obs)
})

test('4b. rotate-secret disconnects the live connection; only the new secret works', async () => {
  const d = await connect(url, as('rot-1', 'rot-1'))
  const closed = closedOf(d)
  const fresh = await cliSecret(g, ['device', 'rotate-secret', 'rot-1'])
  await closed
  assert.equal((await connectRefused(url, as('rot-1', 'rot-1'))).code, 4)
  await end(await connect(url, { clientId: 'rot-1', username: 'rot-1', password: fresh }))
})

test('5. no interleaving of malformed packets and connects leaves a device online without a connection', async () => {
  const conns = await Promise.all(Array.from({ length: 30 }, async (_, i) => {
    const c = await rawConnect(g.mqttPort)
    // three client ids for thirty connections: each CONNECT takes over an earlier one of the same identity
    // (persistent sessions: aedes finishes connecting them, queue and all, after the CONNACK)
    c.send(connectPacket(`flaky:${i % 3}`, { username: 'flaky', password: Buffer.from(secrets.flaky!), clean: i % 2 !== 0 }))
    // half break the stream while the CONNECT is still being checked, half right after it was accepted
    if (i % 2 === 0) c.write(Buffer.from([0xf0, 0xff, 0xff, 0xff, 0xff, 0x01]))
    else void c.next('connack').then(() => c.write(Buffer.from([0x00, 0x00])), () => undefined)
    return c
  }))
  await Promise.all(conns.map((c) => c.closed))
  await waitFor('flaky offline', async () => (JSON.parse((await g.cli(['device', 'show', 'flaky'])).stdout) as { online: boolean }).online === false)
  await waitFor('no device connected', async () => (await g.health()).mqtt.devices === 0)
})

test('8. MQTT logins are throttled before the hash is checked; the right secret waits out the lockout', async () => {
  const throttled = await g.metric('edgeway_refusals_total', { reason: 'login_throttled' })
  const codes: (number | undefined)[] = []
  for (let i = 0; i < 40; i++) codes.push((await connectRefused(url, { clientId: `locked-1:${i}`, username: 'locked-1', password: 'wrong' })).code)
  assert.ok(codes.slice(0, 5).every((c) => c === 4), 'the budget: checked and refused as bad credentials')
  assert.ok(await g.metric('edgeway_refusals_total', { reason: 'login_throttled' }) - throttled >= 30, 'the rest were never checked')
  assert.equal((await connectRefused(url, as('locked-1', 'locked-1'))).code, 5, 'right secret during the lockout: refused')
  await waitFor('lockout over', async () => {
    try { await end(await connect(url, as('locked-1', 'locked-1'))); return true } catch { return false }
  }, scaled(LOCK_SECONDS * 4000), 250)
})

test('8b. an unknown id costs the same as a wrong secret', async () => {
  const time = async (username: string): Promise<number> => {
    const t = performance.now()
    await connectRefused(url, { username, password: 'wrong-secret' })
    return performance.now() - t
  }
  const median = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const wrong: number[] = []
  const unknown: number[] = []
  for (let i = 0; i < 4; i++) { wrong.push(await time(i % 2 ? 'alice' : 'carol')); unknown.push(await time(`nobody-${i}`)) }
  assert.ok(median(unknown) > median(wrong) * 0.5, `unknown id ${median(unknown).toFixed(1)} ms vs wrong secret ${median(wrong).toFixed(1)} ms`)
})

test('11. a flood of 100,000 refusals writes a few log lines and counts every one', async () => {
  const N = 100_000
  const before = await g.metric('edgeway_refusals_total', { reason: 'acl_subscribe' })
  const linesBefore = g.logs.filter((l) => l.reason === 'acl_subscribe').length
  const c = await rawConnect(g.mqttPort)
  c.send(connectPacket('alice:flood', { username: 'alice', password: Buffer.from(secrets.alice!) }))
  assert.equal(((await c.next('connack')) as { returnCode: number }).returnCode, 0)
  const mqttPacket = (await import('mqtt-packet')).default
  // 1,000 SUBSCRIBEs per write, each refused with SUBACK 0x80 (the connection stays up)
  for (let i = 0; i < N; i += 1000) {
    const batch = Array.from({ length: 1000 }, (_, j) => mqttPacket.generate({ cmd: 'subscribe', messageId: ((i + j) % 65535) + 1, subscriptions: [{ topic: 'devices/bob/cmd/#', qos: 1 }] } as never))
    c.write(Buffer.concat(batch))
    await waitFor(`subacks up to ${i + 1000}`, () => c.packets.length >= i + 1000 - 10_000 || c.isClosed())
  }
  await waitFor('every SUBACK', () => c.packets.filter((p) => p.cmd === 'suback').length >= N, scaled(60_000))
  assert.ok(c.packets.every((p) => p.cmd !== 'suback' || (p as { granted: number[] }).granted[0] === 128))
  assert.equal(c.isClosed(), false)
  c.socket.destroy()
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'acl_subscribe' }) - before, N, 'every refusal counted')
  const lines = g.logs.filter((l) => l.reason === 'acl_subscribe').length - linesBefore
  assert.ok(lines >= 1 && lines < 1000, `${lines} log lines`)
})

test('2b. stored wills are checked again as their owner after a restart: forged ones are dropped, never published', async () => {
  await g.stop()
  const file = join(g.dataDir, 'broker.db')
  const p = new SqlitePersistence({ file })
  await p.setup({ id: 'broker-before-crash' })
  const will = (topic: string, owner?: string) => ({ cmd: 'publish', topic, payload: Buffer.from('{"firmware":"evil"}'), qos: 1 as const, retain: true, ...(owner ? { owner } : {}) })
  await p.putWill({ id: 'alice' }, will('devices/bob/cmd/reboot')) // from before owners were recorded
  await p.putWill({ id: 'alice:2' }, will('devices/bob/state', 'device:alice'))
  await p.putWill({ id: 'alice:3' }, will('devices/alice/state', 'device:alice'))
  await p.putWill({ id: 'gone-1' }, will('devices/gone-1/state', 'device:gone-1')) // a removed device's
  await p.destroy()
  await g.start()
  const dropped = g.logs.filter((l) => l.reason === 'acl_will' && /stored will/.test(l.msg))
  assert.equal(dropped.length, 3, dropped.map((l) => l.msg).join('\n'))
  await g.stop()
  const q = new SqlitePersistence({ file })
  await q.setup({ id: 'reader' })
  const left = await q.streamWill({}).toArray() as { clientId: string }[]
  await q.destroy()
  assert.deepEqual(left.map((w) => w.clientId), ['alice:3'])
  await g.start()
})
