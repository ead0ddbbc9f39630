// Client mode (one gateway account instead of a component) against a real Prosody: subscribe to the gateway, chat
// "<device> <command>", offline alerts, and the account's XEP-0191 block list honoured by the gateway.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startProsody, type Prosody } from './helpers/prosody.ts'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { connect, end, type MqttClient } from './helpers/mqtt.ts'
import { xmppUser, xml, type XmppUser } from './helpers/xmpp.ts'
import { pause } from './helpers/net.ts'

let p: Prosody
let g: GatewayProc
const users: XmppUser[] = []
const mqtts: MqttClient[] = []
const GW = 'gw@localhost'

before(async () => {
  p = await startProsody()
  p.register('gw', 'gwpw')
  g = await startGatewayProc({
    xmpp: {
      enabled: true, mode: 'client',
      server: { host: '127.0.0.1', port: p.c2sPort },
      client: { jid: `${GW}/edgeway`, password: 'gwpw' },
      allow: [{ jids: ['alice@localhost', 'mallory@localhost'] }],
      commandTimeoutMs: 1500,
    },
    alerts: { offlineHoldSeconds: 1 },
  })
  await g.waitLog((l) => l.msg === 'xmpp presence announced')
})

after(async () => {
  await Promise.all(users.map((u) => u.stop()))
  await end(...mqtts)
  await g?.cleanup()
  await p?.cleanup()
})

test('client mode: subscribe to the gateway account, "<device> <command>" round-trips, alerts arrive', async () => {
  const secret = await addDevice(g, 'dev1')
  const dev = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'dev1:c', username: 'dev1', password: secret })
  mqtts.push(dev)
  await dev.subscribeAsync('devices/dev1/cmd/#', { qos: 1 })
  dev.on('message', (topic, payload) => {
    if (topic.endsWith('/result')) return
    const { id, args } = JSON.parse(payload.toString()) as { id: string; args: unknown }
    void dev.publishAsync(`${topic}/result`, JSON.stringify({ id, result: { echo: args } }), { qos: 1 })
  })
  await dev.publishAsync('devices/dev1/telemetry', '{"temperature":20.5}', { qos: 1 })
  const alice = await xmppUser(p, 'alice')
  users.push(alice)
  const from = alice.got.length
  await alice.send(xml('presence', { to: GW, type: 'subscribe' }))
  await alice.wait('gateway presence', (s) => s.name === 'presence' && s.attrs.from?.startsWith(`${GW}/`) === true && /devices online/.test(s.getChildText('status') ?? ''), 10000, from)
  assert.match(await alice.ask(GW, 'list'), /dev1/)
  assert.match(await alice.ask(GW, 'help'), /Address a device first/)
  assert.equal(await alice.ask(GW, 'dev1 ping x=2'), 'ping: {"echo":{"x":2}}')
  await pause(300)
  assert.match(await alice.ask(GW, 'dev1 get temperature'), /temperature = 20\.5/)
  assert.match(await alice.ask(GW, 'nosuch status'), /does not start with one of your devices/)
  const f2 = alice.got.length
  dev.stream.destroy()
  await alice.wait('offline alert', (s) => s.name === 'message' && /dev1 went offline/.test(s.getChildText('body') ?? ''), 10000, f2)
})

test('client mode: the account\'s XEP-0191 block list is mirrored by the gateway', async () => {
  // The account owner blocks mallory from another resource of the gateway account.
  const owner = await xmppUser(p, 'gw', 'gwpw', false)
  users.push(owner)
  const r = await owner.iq(xml('iq', { type: 'set' }, xml('block', { xmlns: 'urn:xmpp:blocking' }, xml('item', { jid: 'mallory@localhost' }))))
  assert.equal(r.attrs.type, 'result', r.toString())
  const line = await g.waitLog((l) => l.msg === 'xmpp: server block list changed (XEP-0191)')
  assert.deepEqual(line.jids, ['mallory@localhost'])
  const mallory = await xmppUser(p, 'mallory')
  users.push(mallory)
  const reply = await mallory.ask(GW, 'list', 3000).catch((e: Error) => `no reply: ${e.message}`)
  assert.doesNotMatch(reply, /dev1/, 'a blocked JID gets no answer')
  await owner.iq(xml('iq', { type: 'set' }, xml('unblock', { xmlns: 'urn:xmpp:blocking' }, xml('item', { jid: 'mallory@localhost' }))))
  await g.waitLog((l) => l.msg === 'xmpp: server block list changed (XEP-0191)' && l.change === 'unblock')
  assert.match(await mallory.ask(GW, 'list'), /dev1/)
})
