// Devices authenticate with their own credentials and are confined to their own topics.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { connect, connectRefused, collect, end } from './helpers/mqtt.ts'
import { freePort, waitFor, tempDir } from './helpers/net.ts'
import type { MqttClient } from 'mqtt'
import { rawConnect, connectPacket } from './helpers/raw.ts'

let g: GatewayProc
let url: string
const secrets: Record<string, string> = {}
const tlsPort = await freePort()

const certs = tempDir('edgeway-certs-')

before(async () => {
  // A self-signed certificate for the TLS listener.
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1',
    '-keyout', join(certs.dir, 'key.pem'), '-out', join(certs.dir, 'cert.pem')], { stdio: 'ignore' })
  g = await startGatewayProc({ mqtt: { tls: { enabled: true, host: '127.0.0.1', port: tlsPort, cert: join(certs.dir, 'cert.pem'), key: join(certs.dir, 'key.pem') } } })
  url = `mqtt://127.0.0.1:${g.mqttPort}`
  for (const id of ['alice', 'bob']) secrets[id] = await addDevice(g, id)
})
after(async () => { await g?.cleanup(); certs.cleanup() })

const creds = (id: string, extra: object = {}) => ({ clientId: `${id}:${Math.random().toString(16).slice(2, 8)}`, username: id, password: secrets[id]!, ...extra })

test('a registered device connects with its secret; the registry shows it online, then offline', async () => {
  const c = await connect(url, creds('alice'))
  await c.publishAsync('devices/alice/telemetry', '{"t":20}', { qos: 1 })
  const listed = await g.cli(['device', 'list', '--json'])
  const alice = (JSON.parse(listed.stdout) as { id: string; online: boolean; firstSeen: number | null }[]).find((d) => d.id === 'alice')
  assert.equal(alice?.online, true)
  assert.ok(alice?.firstSeen)
  await end(c)
  await waitFor('offline', async () => (JSON.parse((await g.cli(['device', 'show', 'alice'])).stdout) as { online: boolean }).online === false)
})

test('the secret is stored hashed, never in plaintext', async () => {
  const { readFileSync, readdirSync } = await import('node:fs')
  // the database and its WAL, whichever holds the row now
  const bytes = Buffer.concat(readdirSync(g.dataDir).filter((f) => f.startsWith('registry.db')).map((f) => readFileSync(join(g.dataDir, f))))
  assert.equal(bytes.includes(Buffer.from(secrets.alice!)), false, 'plaintext secret not on disk')
  assert.ok(bytes.includes(Buffer.from('scrypt$16384$')), 'scrypt hash on disk')
})

test('wrong password, unknown device and anonymous clients are refused, and counted', async () => {
  const before = await g.metric('edgeway_refusals_total', { reason: 'bad_credentials' })
  assert.equal((await connectRefused(url, { username: 'alice', password: 'nope' })).code, 4)
  assert.equal((await connectRefused(url, { username: 'mallory', password: 'x' })).code, 4)
  assert.equal((await connectRefused(url, { clientId: 'anon' })).code, 5)
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'bad_credentials' }) - before, 2)
  assert.ok(await g.metric('edgeway_refusals_total', { reason: 'anonymous' }) >= 1)
  await g.waitLog((l) => l.reason === 'bad_credentials' && /wrong or missing secret for device "alice"/.test(l.msg))
})

test('rotate-secret: the old secret stops working, the new one works', async () => {
  const r = await g.cli(['device', 'rotate-secret', 'bob'])
  const fresh = /^secret: (\S+)$/m.exec(r.stdout)![1]!
  assert.equal((await connectRefused(url, { username: 'bob', password: secrets.bob! })).code, 4)
  secrets.bob = fresh
  await end(await connect(url, creds('bob')))
})

test('publishing under another device is refused: the connection closes, nothing is stored, the refusal is counted', async () => {
  const before = await g.metric('edgeway_refusals_total', { reason: 'acl_publish' })
  const inBefore = await g.metric('edgeway_messages_in_total', { link: 'mqtt' })
  const c = await connect(url, creds('alice'))
  const closed = new Promise<void>((resolve) => c.once('close', () => resolve()))
  c.publish('devices/bob/telemetry', '{"t":99}', { qos: 1 })
  await closed
  await end(c)
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'acl_publish' }) - before, 1)
  assert.equal(await g.metric('edgeway_messages_in_total', { link: 'mqtt' }), inBefore)
  await g.waitLog((l) => l.reason === 'acl_publish' && /may only publish under devices\/alice\//.test(l.msg))
  // and a device cannot forge commands to itself
  const d = await connect(url, creds('alice'))
  const closed2 = new Promise<void>((resolve) => d.once('close', () => resolve()))
  d.publish('devices/alice/cmd/unlock', '{}', { qos: 1 })
  await closed2
  await end(d)
})

test('subscribing to # or another device is refused with SUBACK 0x80; own commands are granted', async () => {
  const before = await g.metric('edgeway_refusals_total', { reason: 'acl_subscribe' })
  const c = await rawConnect(g.mqttPort)
  c.send(connectPacket('alice:raw', { username: 'alice', password: Buffer.from(secrets.alice!) }))
  assert.equal(((await c.next('connack')) as { returnCode: number }).returnCode, 0)
  c.send({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: '#', qos: 1 }, { topic: 'devices/bob/cmd/#', qos: 1 }, { topic: 'devices/alice/cmd/#', qos: 1 }] })
  const suback = (await c.next('suback')) as { granted: number[]; messageId: number }
  assert.equal(suback.messageId, 7)
  assert.deepEqual(suback.granted, [128, 128, 1])
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'acl_subscribe' }) - before, 2)
  // the connection stays usable
  c.send({ cmd: 'publish', topic: 'devices/alice/telemetry', payload: Buffer.from('{"t":21}'), qos: 1, messageId: 8 })
  assert.equal(((await c.next('puback')) as { messageId: number }).messageId, 8)
  assert.equal(c.isClosed(), false)
  c.socket.destroy()
})

test('a payload that does not decode is refused with a reason on devices/<id>/errors, logged and counted', async () => {
  const before = await g.metric('edgeway_refusals_total', { reason: 'decode' })
  const c = await connect(url, creds('alice'))
  const got = collect(c)
  await c.subscribeAsync('devices/alice/errors', { qos: 1 })
  await c.publishAsync('devices/alice/telemetry', '{"t": [1,2]}', { qos: 1 })
  const e = await waitFor('error message', () => got.find((p) => p.topic === 'devices/alice/errors'))
  const body = JSON.parse(e.payload.toString()) as { topic: string; reason: string }
  assert.equal(body.topic, 'devices/alice/telemetry')
  assert.match(body.reason, /metric "t" must be a number, string or boolean, got array/)
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'decode' }) - before, 1)
  await g.waitLog((l) => l.msg === 'telemetry refused: payload does not decode' && l.device === 'alice')
  await end(c)
})

test('TLS listener with the configured certificate', async () => {
  const { readFileSync } = await import('node:fs')
  const c: MqttClient = await connect(`mqtts://127.0.0.1:${tlsPort}`, { ...creds('alice'), ca: readFileSync(join(certs.dir, 'cert.pem')), servername: 'localhost', rejectUnauthorized: true })
  const before = await g.metric('edgeway_messages_in_total', { link: 'mqtt' })
  await c.publishAsync('devices/alice/telemetry', '{"t":22}', { qos: 1 })
  assert.equal(await g.metric('edgeway_messages_in_total', { link: 'mqtt' }) - before, 1)
  await end(c)
})

test('removed devices can no longer connect', async () => {
  const id = 'temp-dev'
  secrets[id] = await addDevice(g, id)
  await end(await connect(url, creds(id)))
  const r = await g.cli(['device', 'remove', id])
  assert.equal(r.code, 0)
  assert.equal((await connectRefused(url, { username: id, password: secrets[id] })).code, 4)
})
