// Anonymous and lab modes at the trust boundary: an anonymous client never speaks as a registered device and never
// changes the registry; the deny rules of the role named `anonymous` bind even the open broker.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { connect, connectRefused, end } from './helpers/mqtt.ts'
import { rawConnect, connectPacket } from './helpers/raw.ts'

let anon: GatewayProc
let open: GatewayProc

before(async () => {
  ;[anon, open] = await Promise.all([
    startGatewayProc({ mqtt: { allowAnonymous: true } }),
    startGatewayProc({ mqtt: { openBroker: true }, roles: { anonymous: { rules: [{ deny: 'both', topic: 'devices/secret/#' }] } } }),
  ])
  await addDevice(anon, 'regdev')
})
after(async () => { await Promise.all([anon?.cleanup(), open?.cleanup()]) })

test('3. anonymous mode: a registered device\'s client id needs its secret; anonymous clients never touch the registry', async () => {
  const url = `mqtt://127.0.0.1:${anon.mqttPort}`
  const before = await anon.metric('edgeway_refusals_total', { reason: 'anonymous' })
  assert.equal((await connectRefused(url, { clientId: 'regdev' })).code, 5)
  assert.equal((await connectRefused(url, { clientId: 'regdev:2' })).code, 5)
  assert.equal(await anon.metric('edgeway_refusals_total', { reason: 'anonymous' }) - before, 2)
  await anon.waitLog((l) => l.reason === 'anonymous' && /registered identity "regdev"/.test(l.msg))
  const inBefore = await anon.metric('edgeway_messages_in_total', { link: 'mqtt' })
  const c = await connect(url, { clientId: 'anon-1' })
  await c.publishAsync('devices/anon-1/telemetry', '{"t":1}', { qos: 1 })
  await c.publishAsync('devices/anon-1/state', '{"firmware":"9.9"}', { qos: 1, retain: true })
  assert.equal(await anon.metric('edgeway_messages_in_total', { link: 'mqtt' }) - inBefore, 1, 'its telemetry is stored')
  await end(c)
  const show = await anon.cli(['device', 'show', 'anon-1'])
  assert.notEqual(show.code, 0, 'no registry row for an anonymous client')
  assert.equal((JSON.parse((await anon.cli(['device', 'show', 'regdev'])).stdout) as { firmwareVersion: string | null }).firmwareVersion, null)
})

test('open broker: deny rules of the role "anonymous" refuse SUBSCRIBE with 0x80 and PUBLISH, everything else stays open', async () => {
  const c = await rawConnect(open.mqttPort)
  c.send(connectPacket('lab-1'))
  assert.equal(((await c.next('connack')) as { returnCode: number }).returnCode, 0)
  c.send({ cmd: 'subscribe', messageId: 5, subscriptions: [{ topic: 'devices/secret/telemetry', qos: 1 }, { topic: '#', qos: 0 }, { topic: 'devices/other/telemetry', qos: 1 }] })
  assert.deepEqual(((await c.next('suback')) as { granted: number[] }).granted, [128, 128, 1])
  assert.equal(c.isClosed(), false)
  c.send({ cmd: 'publish', topic: 'devices/secret/telemetry', payload: Buffer.from('{"t":1}'), qos: 1, messageId: 6 })
  await c.closed
  await open.waitLog((l) => l.reason === 'acl_publish' && l.device === 'lab-1')
})
