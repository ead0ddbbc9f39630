// The XMPP bridge in component mode against a real private Prosody, with the real gateway process and real MQTT
// devices: subscriptions and the allowlist, presence mirroring the MQTT link, chat commands, blocking, bad input.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { parse, stringify } from 'yaml'
import { startProsody, type Prosody } from './helpers/prosody.ts'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { connect, end, type MqttClient } from './helpers/mqtt.ts'
import { scaled, waitFor, pause } from './helpers/net.ts'
import { xmppUser, presenceState, xml, type XmppUser, type Stanza } from './helpers/xmpp.ts'

let p: Prosody
let g: GatewayProc
const secrets = new Map<string, string>()
const users: XmppUser[] = []
const mqtts: MqttClient[] = []
const D = (dev: string): string => `${dev}@devices.localhost`

/** A simulated device: answers every command on .../result ("fail" fails, "slow" never answers). */
async function device(id: string): Promise<MqttClient & { commands: string[] }> {
  const c = await connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: `${id}:${Math.random().toString(36).slice(2, 6)}`, username: id, password: secrets.get(id)! }) as MqttClient & { commands: string[] }
  c.commands = []
  await c.subscribeAsync(`devices/${id}/cmd/#`, { qos: 1 })
  c.on('message', (topic, payload) => {
    const name = topic.split('/')[3]!
    if (topic.endsWith('/result')) return
    const { id: cid, args } = JSON.parse(payload.toString()) as { id: string; args: unknown }
    c.commands.push(name)
    if (name === 'slow') return
    const reply = name === 'fail' ? { id: cid, error: 'relay stuck' } : { id: cid, result: { echo: args } }
    void c.publishAsync(`${topic}/result`, JSON.stringify(reply), { qos: 1 })
  })
  mqtts.push(c)
  return c
}

async function user(name: string): Promise<XmppUser> {
  const u = await xmppUser(p, name)
  users.push(u)
  return u
}

/**
 * Sends `subscribe` and returns the device's answer. Prosody hands an inbound `subscribed`/`unsubscribed` to the client
 * as a roster push (subscription "to" / "none" without a pending ask) rather than as the presence itself.
 */
async function subscribe(u: XmppUser, dev: string): Promise<string> {
  const from = u.got.length
  await u.send(xml('presence', { to: D(dev), type: 'subscribe' }))
  const answer = (s: Stanza): string | undefined => {
    if (s.name === 'presence' && s.attrs.from === D(dev) && (s.attrs.type === 'subscribed' || s.attrs.type === 'unsubscribed')) return s.attrs.type
    const item = s.name === 'iq' && s.attrs.type === 'set' ? s.getChild('query', 'jabber:iq:roster')?.getChild('item') : undefined
    if (!item || item.attrs.jid !== D(dev)) return undefined
    if (item.attrs.subscription === 'to' || item.attrs.subscription === 'both') return 'subscribed'
    if (item.attrs.subscription === 'none' && !item.attrs.ask) return 'unsubscribed'
    return undefined
  }
  const r = await u.wait(`subscription answer from ${dev}`, (s) => answer(s) !== undefined, 10000, from)
    .catch((err: Error) => { throw new Error(`${err.message}\ngot: ${u.got.slice(from).map((s) => s.toString()).join('\n')}\ngateway: ${g.logs.filter((l) => /xmpp/.test(l.msg)).map((l) => JSON.stringify(l)).join('\n')}`) })
  return answer(r)!
}

before(async () => {
  p = await startProsody()
  g = await startGatewayProc({
    xmpp: {
      enabled: true,
      server: { host: '127.0.0.1', port: p.componentPort },
      component: { domain: p.componentDomain, secret: p.secret },
      allow: [
        { jids: ['alice@localhost', 'carol@localhost'] },
        { jids: ['viewer@localhost'], devices: ['dev1'], commands: false },
      ],
      // The deprecated key (one release): still applied, as a rule of the alerts engine (see the warning below).
      alerts: { offline: true, thresholds: [{ metric: 'temperature', above: 30 }] },
      maxMessageBytes: 1000,
      commandTimeoutMs: 1500,
    },
    // Offline alerts wait for the engine's hold-down: short here.
    alerts: { offlineHoldSeconds: 1 },
  })
  for (const id of ['dev1', 'dev2']) secrets.set(id, await addDevice(g, id))
  await g.waitLog((l) => l.msg === 'xmpp connected')
})

after(async () => {
  await Promise.all(users.map((u) => u.stop()))
  await end(...mqtts)
  await g?.cleanup()
  await p?.cleanup()
})

test('subscribe -> subscribed; presence follows the MQTT link (available, unavailable on an abrupt drop, available again)', async () => {
  const alice = await user('alice')
  const dev = await device('dev1')
  await dev.publishAsync('devices/dev1/telemetry', JSON.stringify({ temperature: 21.5, humidity: 40 }), { qos: 1 })
  assert.equal(await subscribe(alice, 'dev1'), 'subscribed')
  const avail = await alice.wait('dev1 available', (s) => s.name === 'presence' && s.attrs.from === D('dev1') && !s.attrs.type)
  await waitFor('status text with the reading', () => alice.presencesFrom(D('dev1')).some((s) => /temperature=21\.5/.test(s.getChildText('status') ?? '')), 10000)
  assert.ok(avail)
  // Abrupt close (no DISCONNECT): the broker sees the socket die, the last will fires, the bridge says unavailable.
  const from = alice.got.length
  const t0 = performance.now()
  dev.stream.destroy()
  await alice.wait('dev1 unavailable', (s) => s.name === 'presence' && s.attrs.from === D('dev1') && s.attrs.type === 'unavailable', 10000, from)
  const latency = performance.now() - t0
  console.log(`presence latency after an abrupt device drop: ${latency.toFixed(0)} ms`)
  const alert = await alice.wait('offline alert', (s) => s.name === 'message' && /dev1 went offline/.test(s.getChildText('body') ?? ''), 5000, from)
  assert.equal(alert.attrs.type, 'chat')
  const from2 = alice.got.length
  await device('dev1')
  await alice.wait('dev1 available again', (s) => s.name === 'presence' && s.attrs.from === D('dev1') && !s.attrs.type, 10000, from2)
  await alice.wait('back online message', (s) => s.name === 'message' && /dev1 is back online/.test(s.getChildText('body') ?? ''), 5000, from2)
})

test('overdue readings turn presence to away, then xa; a fresh reading makes it available again', async () => {
  const alice = users.find((u) => u.jid === 'alice@localhost')!
  const dev = mqtts.filter((m) => m.connected && m.options.username === 'dev1').at(-1)!
  const from = alice.got.length
  // A steady rhythm of one reading per 250 ms, then silence while the MQTT session stays up.
  for (let i = 0; i < 8; i++) {
    await dev.publishAsync('devices/dev1/telemetry', JSON.stringify({ temperature: 22 + i / 10 }), { qos: 1 })
    await pause(250)
  }
  const show = (want: string) => (s: Stanza): boolean => s.name === 'presence' && s.attrs.from === D('dev1') && presenceState(s) === want
  await alice.wait('away', show('away'), 5000, from)
  await alice.wait('xa', show('xa'), 8000, from)
  assert.match(await alice.ask(D('dev1'), 'status'), /^dev1: online, readings long overdue/)
  const f2 = alice.got.length
  await dev.publishAsync('devices/dev1/telemetry', JSON.stringify({ temperature: 25 }), { qos: 1 })
  await alice.wait('available again', show('available'), 5000, f2)
})

test('a JID outside the allowlist is refused; a view-only JID may subscribe but not command', async () => {
  const bob = await user('bob')
  assert.equal(await subscribe(bob, 'dev1'), 'unsubscribed')
  await g.waitLog((l) => l.msg === 'xmpp subscription refused' && l.jid === 'bob@localhost')
  assert.match(await bob.ask(D('dev1'), 'status'), /ERROR .*forbidden/)
  const viewer = await user('viewer')
  assert.equal(await subscribe(viewer, 'dev2'), 'unsubscribed', 'viewer is allowed dev1 only')
  assert.equal(await subscribe(viewer, 'dev1'), 'subscribed')
  assert.match(await viewer.ask(D('dev1'), 'status'), /ERROR .*forbidden/)
  const ghost = await subscribe(bob, 'ghost')
  assert.equal(ghost, 'unsubscribed', 'unknown device')
})

test('chat commands: help, status, get, list, set and device commands round-trip to the MQTT device; unknown ones get help', async () => {
  const alice = users.find((u) => u.jid === 'alice@localhost') ?? await user('alice')
  const dev = await device('dev2')
  await dev.publishAsync('devices/dev2/telemetry', JSON.stringify({ temperature: 19.25, door: 'open' }), { qos: 1 })
  assert.match(await alice.ask(D('dev2'), 'help'), /get <metric>/)
  await waitFor('reading seen by the bridge', async () => /temperature = 19\.25/.test(await alice.ask(D('dev2'), 'get temperature')), 5000, 100)
  assert.match(await alice.ask(D('dev2'), 'get nosuch'), /no metric "nosuch"; known: temperature, door/)
  assert.match(await alice.ask(D('dev2'), 'status'), /^dev2: online \(mqtt\)/)
  // `list` to the component itself also carries a XEP-0144 roster suggestion of the devices.
  const f0 = alice.got.length
  assert.match(await alice.ask('devices.localhost', 'list'), /dev2@devices\.localhost/)
  const rx = alice.got.slice(f0).find((s) => s.name === 'message')!.getChild('x', 'http://jabber.org/protocol/rosterx')
  assert.deepEqual(rx?.getChildren('item').map((i) => [i.attrs.action, i.attrs.jid, i.getChildText('group')]), [['add', D('dev1'), 'edgeway test-gw'], ['add', D('dev2'), 'edgeway test-gw']])
  const list = await alice.ask(D('dev2'), 'list')
  assert.match(list, /dev1@devices\.localhost/)
  assert.match(list, /dev2@devices\.localhost \(online\)/)
  assert.equal(await alice.ask(D('dev2'), 'ping x=1 label=hi'), 'ping: {"echo":{"x":1,"label":"hi"}}')
  assert.equal(await alice.ask(D('dev2'), 'set led 1'), 'set: {"echo":{"name":"led","value":1}}')
  assert.equal(await alice.ask(D('dev2'), 'fail'), 'fail failed: relay stuck')
  assert.match(await alice.ask(D('dev2'), 'slow'), /slow: no answer from the device .*help/)
  assert.match(await alice.ask(D('dev2'), 'frob!nicate now'), /did not understand "frob!nicate now".*\n.*help/)
  assert.match(await alice.ask(D('dev2'), 'get'), /usage: get <metric>/)
  // Ad-hoc commands (XEP-0050): the command menu of a device, its status, and a device command through a form.
  const cmdNs = 'http://jabber.org/protocol/commands'
  const menu = await alice.iq(xml('iq', { type: 'get', to: D('dev2') }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items', node: cmdNs })))
  assert.deepEqual(menu.getChild('query')?.getChildren('item').map((i) => i.attrs.node), ['status', 'command'])
  const st = await alice.iq(xml('iq', { type: 'set', to: D('dev2') }, xml('command', { xmlns: cmdNs, node: 'status', action: 'execute' })))
  assert.match(st.getChild('command')?.getChildText('note') ?? '', /^dev2: online/)
  const form = await alice.iq(xml('iq', { type: 'set', to: D('dev2') }, xml('command', { xmlns: cmdNs, node: 'command', action: 'execute' })))
  const sid = form.getChild('command')?.attrs.sessionid
  assert.equal(form.getChild('command')?.attrs.status, 'executing')
  const done = await alice.iq(xml('iq', { type: 'set', to: D('dev2') }, xml('command', { xmlns: cmdNs, node: 'command', sessionid: sid, action: 'complete' },
    xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, xml('field', { var: 'name' }, xml('value', {}, 'ping')), xml('field', { var: 'args' }, xml('value', {}, 'via=adhoc'))))))
  assert.equal(done.getChild('command')?.attrs.status, 'completed')
  assert.equal(done.getChild('command')?.getChildText('note'), 'ping: {"echo":{"via":"adhoc"}}')
  assert.deepEqual(dev.commands, ['ping', 'set', 'fail', 'slow', 'ping'])
  // A threshold crossing reaches subscribers as a chat message.
  assert.equal(await subscribe(alice, 'dev2'), 'subscribed')
  const from = alice.got.length
  await dev.publishAsync('devices/dev2/telemetry', JSON.stringify({ temperature: 31 }), { qos: 1 })
  await alice.wait('threshold alert', (s) => s.name === 'message' && /dev2: temperature = 31 is above 30/.test(s.getChildText('body') ?? ''), 5000, from)
  const warning = g.logs.find((l) => l.msg.startsWith('xmpp.alerts.thresholds is deprecated'))
  assert.ok(warning, 'the deprecated key is named at start')
  assert.match(warning.msg, /move these rules to alerts\.thresholds/)
  assert.equal(warning.level, 40)
})

test('blocking: a blocked JID gets no presence and no messages, and cannot command; unblock restores it (no restart)', async () => {
  const carol = await user('carol')
  assert.equal(await subscribe(carol, 'dev1'), 'subscribed')
  assert.equal((await carol.ask(D('dev1'), 'ping')).startsWith('ping:'), true)
  const r = await g.cli(['xmpp', 'block', 'carol@localhost/whatever'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.stdout, 'blocked carol@localhost\n')
  assert.match((await g.cli(['xmpp', 'blocked'])).stdout, /^carol@localhost$/m)
  const from = carol.got.length
  const seen = mqtts.flatMap((m) => (m as MqttClient & { commands: string[] }).commands).length
  // A presence change of dev1 (drop and return) and a command attempt: carol must see none of it.
  const alice = users.find((u) => u.jid === 'alice@localhost')!
  const aFrom = alice.got.length
  for (const m of mqtts.filter((x) => x.connected && x.options.username === 'dev1')) m.stream.destroy()
  await alice.wait('alice sees dev1 go', (s) => s.name === 'presence' && s.attrs.from === D('dev1') && s.attrs.type === 'unavailable', 10000, aFrom)
  await carol.send(xml('message', { to: D('dev1'), type: 'chat' }, xml('body', {}, 'ping')))
  await carol.send(xml('presence', { to: D('dev1'), type: 'probe' }))
  await device('dev1')
  await alice.wait('alice sees dev1 back', (s) => s.name === 'presence' && s.attrs.from === D('dev1') && !s.attrs.type, 10000, aFrom)
  // Past the alert hold-down (1 s, timers polled each second) of both the drop and the return: no alert either.
  await new Promise((res) => setTimeout(res, scaled(2500)))
  assert.deepEqual(carol.got.slice(from).filter((s) => s.attrs.from?.endsWith('devices.localhost')).map((s) => s.toString()), [], 'nothing from the devices')
  assert.equal(mqtts.flatMap((m) => (m as MqttClient & { commands: string[] }).commands).length, seen, 'the command never reached a device')
  await g.waitLog((l) => l.msg === 'xmpp: stanza from a blocked JID dropped' && l.from === 'carol@localhost')
  assert.equal((await g.cli(['xmpp', 'unblock', 'carol@localhost'])).code, 0)
  assert.match(await carol.ask(D('dev1'), 'status'), /^dev1: online/)
  assert.equal((await g.cli(['xmpp', 'unblock', 'carol@localhost'])).code, 1, 'unblocking twice says it was not blocked')
})

test('bad input: oversized message, unknown device, unknown iq, bogus presence type -> clear answers, gateway keeps working', async () => {
  const alice = users.find((u) => u.jid === 'alice@localhost')!
  assert.match(await alice.ask(D('dev1'), 'x'.repeat(5000)), /too long \(5000 bytes; the limit is 1000\)/)
  await g.waitLog((l) => l.msg === 'xmpp: oversized message refused')
  assert.match(await alice.ask(D('nosuchdevice'), 'status'), /ERROR .*item-not-found/)
  const from = alice.got.length
  await alice.send(xml('iq', { to: D('dev1'), type: 'get', id: 'q1' }, xml('query', { xmlns: 'urn:example:nothing' })))
  const iq = await alice.wait('iq error', (s) => s.name === 'iq' && s.attrs.id === 'q1', 5000, from)
  assert.equal(iq.attrs.type, 'error')
  assert.ok(iq.getChild('error')?.getChild('service-unavailable'), iq.toString())
  await alice.send(xml('iq', { to: D('dev1'), type: 'get', id: 'q2' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })))
  const info = await alice.wait('disco#info', (s) => s.name === 'iq' && s.attrs.id === 'q2', 5000, from)
  assert.equal(info.attrs.type, 'result', info.toString())
  // Malformed: an iq with two payloads (RFC 6120 allows one) -> bad-request. (Prosody itself drops stanzas such as
  // a presence of an unknown type before they reach the component; parseIncoming's unit test covers those.)
  await alice.send(xml('iq', { to: D('dev1'), type: 'set', id: 'q3' }, xml('a', { xmlns: 'urn:x' }), xml('b', { xmlns: 'urn:x' })))
  const bad = await alice.wait('bad-request', (s) => s.name === 'iq' && s.attrs.id === 'q3', 5000, from)
  assert.ok(bad.getChild('error')?.getChild('bad-request'), bad.toString())
  await alice.send(xml('presence', { to: D('dev1'), type: 'bogus' }))
  assert.match(await alice.ask(D('dev1'), '\u{1F600} <b>&amp;</b>'), /did not understand "\u{1F600} <b>&amp;<\/b>"/u)
  assert.match(await alice.ask(D('dev1'), 'status'), /^dev1: online/)
  assert.equal(g.proc.exitCode, null, 'the gateway is still running')
})

test('an approved subscription survives a gateway restart; presence is re-announced', async () => {
  const alice = users.find((u) => u.jid === 'alice@localhost')!
  const from = alice.got.length
  assert.equal(await g.stop(), 0)
  await alice.wait('unavailable when the gateway stops', (s) => s.name === 'presence' && s.attrs.from === D('dev1') && s.attrs.type === 'unavailable', 10000, from)
  // The viewer's rule is gone from the new config: its stored subscription must stay silent.
  const cfg = parse(readFileSync(g.configFile, 'utf8')) as { xmpp: { allow: { jids: string[] }[] } }
  cfg.xmpp.allow = cfg.xmpp.allow.filter((r) => !r.jids.includes('viewer@localhost'))
  writeFileSync(g.configFile, stringify(cfg))
  const viewer = users.find((u) => u.jid === 'viewer@localhost')!
  const vFrom = viewer.got.length
  await g.start()
  await g.waitLog((l) => l.msg === 'xmpp presence announced' && (l.subscriptions as number) >= 3)
  await device('dev1')
  await alice.wait('dev1 available after the restart', (s) => s.name === 'presence' && s.attrs.from === D('dev1') && !s.attrs.type, 10000, from)
  // Still subscribed: a probe is answered with presence, not `unsubscribed`.
  const f2 = alice.got.length
  await alice.send(xml('presence', { to: D('dev1'), type: 'probe' }))
  const r = await alice.wait('probe answer', (s) => s.name === 'presence' && s.attrs.from === D('dev1'), 5000, f2)
  assert.notEqual(r.attrs.type, 'unsubscribed')
  assert.equal(presenceState(r), 'available')
  assert.deepEqual(viewer.got.slice(vFrom).filter((s) => s.attrs.from?.endsWith('devices.localhost')).map((s) => s.toString()), [], 'no longer allowed: nothing')
})
