// Engine alerts over XMPP against a real Prosody: a subscriber gets a flapping device's offline alert exactly once
// (and its clear once), threshold rules from the new `alerts.thresholds` key, and a gateway-wide alert (the
// upstream Mosquitto stopped) from the component itself.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startProsody, type Prosody } from './helpers/prosody.ts'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { connect, end, type MqttClient } from './helpers/mqtt.ts'
import { scaled, pause } from './helpers/net.ts'
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.ts'
import { xmppUser, xml, type XmppUser, type Stanza } from './helpers/xmpp.ts'

const HOLD_S = 2
let p: Prosody
let mosq: Mosquitto
let g: GatewayProc
let alice: XmppUser
let secret = ''
const mqtts: MqttClient[] = []
const D = 'flap@devices.localhost'
const body = (s: Stanza): string => s.getChildText('body') ?? ''

before(async () => {
  p = await startProsody()
  mosq = await startMosquitto()
  g = await startGatewayProc({
    xmpp: {
      enabled: true,
      server: { host: '127.0.0.1', port: p.componentPort },
      component: { domain: p.componentDomain, secret: p.secret },
      allow: [{ jids: ['alice@localhost'] }],
    },
    alerts: { offlineHoldSeconds: HOLD_S, thresholds: [{ device: 'flap', metric: 'pressure', below: 900 }], upstreamDownSeconds: 1 },
    upstreams: [{ name: 'cloud', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, reconnectMinMs: 100, reconnectMaxMs: 300 }],
  })
  secret = await addDevice(g, 'flap')
  await g.waitLog((l) => l.msg === 'xmpp connected')
  alice = await xmppUser(p, 'alice')
  const from = alice.got.length
  await alice.send(xml('presence', { to: D, type: 'subscribe' }))
  await g.waitLog((l) => l.msg === 'xmpp subscription approved' && l.jid === 'alice@localhost')
  await alice.wait('first presence of flap', (s) => s.name === 'presence' && s.attrs.from === D, 10000, from)
})

after(async () => {
  await alice?.stop()
  await end(...mqtts)
  await g?.cleanup()
  await p?.cleanup()
  await mosq?.stop()
})

test('a flapping device: the subscriber gets its offline alert exactly once, and one "back online" after it settles', async () => {
  const from = alice.got.length
  const c0 = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'flap', username: 'flap', password: secret })
  mqtts.push(c0)
  await pause(300)
  c0.stream.destroy()
  // Online/offline about every 250 ms for longer than two hold times.
  const stopAt = Date.now() + HOLD_S * 2500
  while (Date.now() < stopAt) {
    const c = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'flap', username: 'flap', password: secret })
    mqtts.push(c)
    await new Promise((r) => setTimeout(r, 120))
    c.stream.destroy()
    await new Promise((r) => setTimeout(r, 120))
  }
  const last = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'flap', username: 'flap', password: secret })
  mqtts.push(last)
  const back = await alice.wait('back online', (s) => s.name === 'message' && /flap is back online/.test(body(s)), HOLD_S * 1000 + 10000, from)
  assert.equal(back.attrs.from, D)
  await new Promise((r) => setTimeout(r, scaled(1000)))
  const offline = alice.got.slice(from).filter((s) => s.name === 'message' && /flap went offline/.test(body(s)))
  assert.equal(offline.length, 1, `one offline alert for the whole flapping: ${offline.map(body).join(' | ')}`)
  assert.match(body(offline[0]!), /^⚠️ flap went offline \d+ times in \d+ s \(flapping; last: /)
  assert.equal(alice.got.slice(from).filter((s) => s.name === 'message' && /back online/.test(body(s))).length, 1)
  assert.equal(g.logs.filter((l) => l.msg === 'alert raised' && l.device === 'flap').length, 1)
  // Presence still mirrors the link at once (only alerts are held down): many presence changes went out.
  assert.ok(alice.got.slice(from).filter((s) => s.name === 'presence' && s.attrs.from === D).length >= 4)

  // A threshold from alerts.thresholds reaches the same subscriber.
  const f2 = alice.got.length
  await last.publishAsync('devices/flap/telemetry', JSON.stringify({ pressure: 850 }), { qos: 1 })
  const t = await alice.wait('threshold alert', (s) => s.name === 'message' && s.attrs.from === D && /pressure/.test(body(s)), 5000, f2)
  assert.equal(body(t), '⚠️ flap: pressure = 850 is below 900')
  await last.publishAsync('devices/flap/telemetry', JSON.stringify({ pressure: 1000 }), { qos: 1 })
  const tc = await alice.wait('threshold clear', (s) => s.name === 'message' && s.attrs.from === D && /back in range/.test(body(s)), 5000, f2)
  assert.equal(body(tc), '✅ flap: pressure = 1000 is back in range')
})

test('a gateway-wide alert (upstream down longer than 1 s) comes from the component JID, once, and its clear', async () => {
  const from = alice.got.length
  await mosq.stop('SIGTERM')
  const down = await alice.wait('upstream alert', (s) => s.name === 'message' && /upstream "cloud" down/.test(body(s)), 15000, from)
  assert.equal(down.attrs.from, 'devices.localhost', 'from the component, not from a device')
  assert.match(body(down), /^⚠️ upstream "cloud" down for more than 1 s/)
  const h = await g.health() as unknown as { status: string; alerts: { id: string }[] }
  assert.equal(h.status, 'degraded')
  assert.ok(h.alerts.some((a) => a.id === 'upstream_down:cloud'))
  await mosq.start()
  const up = await alice.wait('upstream clear', (s) => s.name === 'message' && /upstream "cloud" is connected again/.test(body(s)), 15000, from)
  assert.equal(up.attrs.from, 'devices.localhost')
  await new Promise((r) => setTimeout(r, scaled(1000)))
  assert.equal(alice.got.slice(from).filter((s) => s.name === 'message' && /upstream "cloud"/.test(body(s))).length, 2, 'one raise, one clear')
})
