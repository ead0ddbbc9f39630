// Home Assistant discovery end to end: the gateway as a child process, an MQTT.js "Home Assistant" logged in as an
// integration client (operator; a second one as observer), simulated devices. Checks the discovery payloads against
// HA's documented keys, state values, availability following the device's link, a button press reaching the device
// and its result coming back, HA's birth message republishing everything (rate-limited against a flood), a removed
// device's configs cleared, and that observers cannot press and devices cannot forge discovery or availability.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { cliSecret, startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { connect, collect, end, type MqttClient } from './helpers/mqtt.ts'
import { waitFor, scaled } from './helpers/net.ts'
import { assertValidDiscovery } from './helpers/ha-schema.ts'
import { Registry } from '../gateway/registry/registry.ts'
import type { IPublishPacket } from 'mqtt'

/** MQTT.js protocol version of every client here: 4 (3.1.1) until MQTT 5 is merged, then 5. Nothing else depends on it. */
const PROTOCOL_VERSION: 4 | 5 = 4

const NODE = 'test-gw'
const COOLDOWN_MS = scaled(2000)
let g: GatewayProc
let url: string
const secrets: Record<string, string> = {}
let ha: MqttClient
let got: IPublishPacket[]
let device: MqttClient

const METADATA = {
  name: 'Pump house',
  metrics: { temperature: { unit: '°C', name: 'Temperature' } },
  commands: [{ name: 'reboot' }, { name: 'relay', kind: 'switch', state: 'relay' }],
}

const opts = (username: string, password: string, clientId: string) => ({ protocolVersion: PROTOCOL_VERSION, username, password, clientId })
const configsOf = (dev: string) => (p: IPublishPacket) => p.topic.startsWith('homeassistant/') && p.topic.endsWith('/config') && p.payload.length > 0 &&
  (JSON.parse(p.payload.toString()) as { device?: { identifiers?: string[] } }).device?.identifiers?.[0] === `edgeway_${NODE}_${dev}`
const json = (p: IPublishPacket): Record<string, unknown> => JSON.parse(p.payload.toString()) as Record<string, unknown>
const closedOf = (c: MqttClient): Promise<void> => new Promise((resolve) => { if (c.disconnected || !c.connected) resolve(); c.once('close', () => resolve()) })

/** A refused publish: 3.1.1 closes the connection (as for every ACL refusal); 5 may answer with a reason code >= 0x80. */
async function publishRefused(c: MqttClient, topic: string, payload: string): Promise<string> {
  const closed = closedOf(c).then(() => 'closed')
  const acked = c.publishAsync(topic, payload, { qos: 1 }).then((p) => {
    const rc = (p as { reasonCode?: number } | undefined)?.reasonCode ?? 0
    return rc >= 0x80 ? `reason ${rc}` : 'accepted'
  }, () => 'closed')
  return Promise.race([closed, acked])
}

before(async () => {
  g = await startGatewayProc({ homeassistant: { enabled: true, birthCooldownSeconds: COOLDOWN_MS / 1000 } }, { start: false })
  url = `mqtt://127.0.0.1:${g.mqttPort}`
  // Registered with metadata before start (the device page's editor does not know `kind` yet): the registry itself.
  const r = new Registry(join(g.dataDir, 'registry.db'))
  r.open()
  secrets['pump-1'] = await r.add('pump-1', METADATA)
  secrets.mallory = await r.add('mallory')
  r.close()
  await g.start()
  secrets.ha = await cliSecret(g, ['client', 'add', 'ha', '--role', 'operator'])
  secrets['ha-view'] = await cliSecret(g, ['client', 'add', 'ha-view', '--role', 'observer'])
  ha = await connect(url, opts('ha', secrets.ha, 'homeassistant-1'))
  got = collect(ha)
  const granted = await ha.subscribeAsync([`homeassistant/#`, `edgeway/${NODE}/#`, 'devices/+/cmd/+/result'], { qos: 1 })
  assert.deepEqual(granted.map((x) => x.qos), [1, 1, 1], 'an operator may read discovery, the gateway\'s topics and results')
})
after(async () => {
  await end(...[ha, device].filter(Boolean))
  await g?.cleanup()
})

test('1. retained discovery of a registered device: every payload as HA documents it, the gateway as via_device', async () => {
  const cfgs = await waitFor('3 configs of pump-1', () => { const c = got.filter(configsOf('pump-1')); return c.length >= 3 && c })
  for (const p of cfgs) { assert.equal(p.retain, true, `${p.topic} retained`); assertValidDiscovery(p.topic, json(p)) }
  const byComponent = Object.fromEntries(cfgs.map((p) => [p.topic.split('/')[1], json(p)]))
  assert.deepEqual(Object.keys(byComponent).sort(), ['button', 'sensor', 'switch'])
  assert.equal(byComponent.sensor!.unit_of_measurement, '°C')
  assert.equal(byComponent.sensor!.device_class, 'temperature')
  assert.equal((byComponent.sensor!.device as { via_device: string }).via_device, `edgeway_${NODE}`)
  assert.equal((byComponent.sensor!.device as { name: string }).name, 'Pump house')
  assert.equal(byComponent.button!.command_topic, 'devices/pump-1/cmd/reboot')
  const gw = await waitFor('gateway config', () => got.find((p) => p.topic === `homeassistant/binary_sensor/${NODE}/gateway__status/config`))
  assertValidDiscovery(gw.topic, json(gw))
  assert.deepEqual((json(gw).device as { identifiers: string[] }).identifiers, [`edgeway_${NODE}`])
  const status = await waitFor('gateway status', () => got.find((p) => p.topic === `edgeway/${NODE}/status`))
  assert.equal(status.payload.toString(), 'online')
  assert.equal(status.retain, true)
  const avail = await waitFor('pump-1 availability', () => got.find((p) => p.topic === `edgeway/${NODE}/devices/pump-1/availability`))
  assert.equal(avail.payload.toString(), 'offline', 'not connected yet')
})

test('2. a reading: new metrics get their configs once, state values arrive, the device is available', async () => {
  device = await connect(url, opts('pump-1', secrets['pump-1']!, 'pump-1'))
  await device.subscribeAsync('devices/pump-1/cmd/#', { qos: 1 })
  await waitFor('online', () => got.filter((p) => p.topic === `edgeway/${NODE}/devices/pump-1/availability`).at(-1)?.payload.toString() === 'online')
  const mark = got.length
  await device.publishAsync('devices/pump-1/telemetry', JSON.stringify({ temperature: 21.5, relay: false, mode: 'auto' }), { qos: 1 })
  const state = await waitFor('state', () => got.slice(mark).find((p) => p.topic === `edgeway/${NODE}/devices/pump-1/state`))
  assert.deepEqual(json(state), { temperature: 21.5, relay: false, mode: 'auto' })
  const fresh = await waitFor('configs of relay and mode', () => { const c = got.slice(mark).filter(configsOf('pump-1')); return c.length >= 2 && c })
  for (const p of fresh) assertValidDiscovery(p.topic, json(p))
  const comp = fresh.map((p) => `${p.topic.split('/')[1]}:${json(p).name as string}`).sort()
  assert.deepEqual(comp, ['binary_sensor:relay', 'sensor:mode'])
  const mode = json(fresh.find((p) => p.topic.includes('/sensor/'))!)
  assert.equal(mode.unit_of_measurement, undefined, 'a string sensor has no unit')
  // Every entity's template finds its key in the state JSON: what HA would render.
  for (const p of got.filter(configsOf('pump-1'))) {
    const c = json(p)
    if (typeof c.value_template !== 'string') continue
    const key = JSON.parse(/value_json\[("(?:[^"\\]|\\.)*")\]/.exec(c.value_template)![1]!) as string
    assert.ok(key in json(state), `${key} is in the state`)
  }
  // A second reading with one metric: no new configs, the state still carries every metric.
  const mark2 = got.length
  await device.publishAsync('devices/pump-1/telemetry', JSON.stringify({ temperature: 22 }), { qos: 1 })
  const s2 = await waitFor('second state', () => got.slice(mark2).find((p) => p.topic === `edgeway/${NODE}/devices/pump-1/state`))
  assert.deepEqual(json(s2), { temperature: 22, relay: false, mode: 'auto' })
  await new Promise((r) => setTimeout(r, scaled(300)))
  assert.equal(got.slice(mark2).filter(configsOf('pump-1')).length, 0, 'a known metric publishes its config only once')
})

test('3. the device\'s link drops: unavailable; back: available', async () => {
  const availability = () => got.filter((p) => p.topic === `edgeway/${NODE}/devices/pump-1/availability`).at(-1)
  device.stream.destroy()
  await waitFor('offline', () => availability()?.payload.toString() === 'offline')
  assert.equal(availability()!.retain, false, 'delivered live (retained on the broker)')
  device = await connect(url, opts('pump-1', secrets['pump-1']!, 'pump-1'))
  await device.subscribeAsync('devices/pump-1/cmd/#', { qos: 1 })
  await waitFor('online again', () => availability()?.payload.toString() === 'online')
  // A late subscriber gets the retained value.
  const late = await connect(url, opts('ha-view', secrets['ha-view']!, 'ha-late'))
  const lateGot = collect(late)
  await late.subscribeAsync(`edgeway/${NODE}/devices/pump-1/availability`, { qos: 1 })
  const r = await waitFor('retained availability', () => lateGot[0])
  assert.equal(r.payload.toString(), 'online')
  assert.equal(r.retain, true)
  await end(late)
})

test('4. a button press from HA reaches the device as a command, and its result comes back', async () => {
  const button = json(got.filter(configsOf('pump-1')).find((p) => p.topic.includes('/button/'))!)
  const cmds = collect(device)
  await ha.publishAsync(button.command_topic as string, button.payload_press as string, { qos: button.qos as 0 | 1 })
  const cmd = await waitFor('command at the device', () => cmds.find((p) => p.topic === 'devices/pump-1/cmd/reboot'))
  const body = json(cmd) as { id: string; args: unknown }
  assert.equal(typeof body.id, 'string')
  assert.equal(body.args, null)
  await device.publishAsync('devices/pump-1/cmd/reboot/result', JSON.stringify({ id: body.id, result: 'rebooting' }), { qos: 1 })
  const res = await waitFor('result at HA', () => got.find((p) => p.topic === 'devices/pump-1/cmd/reboot/result'))
  assert.deepEqual(json(res), { id: body.id, result: 'rebooting' })
  // The switch: on and off in the command format, with a boolean arg.
  const sw = json(got.filter(configsOf('pump-1')).find((p) => p.topic.includes('/switch/'))!)
  await ha.publishAsync(sw.command_topic as string, sw.payload_on as string, { qos: 1 })
  const on = await waitFor('switch on at the device', () => cmds.find((p) => p.topic === 'devices/pump-1/cmd/relay'))
  assert.deepEqual((json(on) as { args: unknown }).args, { on: true })
})

test('5. an observer cannot press: refused like every ACL refusal, the device gets nothing', async () => {
  const viewer = await connect(url, opts('ha-view', secrets['ha-view']!, 'ha-view-1'))
  const granted = await viewer.subscribeAsync(['homeassistant/#', `edgeway/${NODE}/devices/+/state`], { qos: 0 })
  assert.deepEqual(granted.map((x) => x.qos), [0, 0], 'an observer reads discovery and state')
  const cmds = collect(device)
  const before = await g.metric('edgeway_refusals_total', { reason: 'acl_publish' })
  assert.notEqual(await publishRefused(viewer, 'devices/pump-1/cmd/reboot', JSON.stringify({ id: 'x', args: null })), 'accepted')
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'acl_publish' }) - before, 1)
  await new Promise((r) => setTimeout(r, scaled(300)))
  assert.equal(cmds.filter((p) => p.topic === 'devices/pump-1/cmd/reboot').length, 0)
  await end(viewer)
})

test('6. neither a device nor an integration client can forge discovery configs or availability', async () => {
  const forged = [
    ['homeassistant/sensor/test-gw/pump-1__temperature/config', JSON.stringify({ state_topic: 'x', name: 'evil' })],
    ['homeassistant/switch/evil/config', JSON.stringify({ command_topic: 'devices/pump-1/cmd/reboot' })],
    [`edgeway/${NODE}/devices/pump-1/availability`, 'offline'],
    [`edgeway/${NODE}/status`, 'offline'],
  ] as const
  const before = await g.metric('edgeway_refusals_total', { reason: 'acl_publish' })
  const mark = got.length
  for (const [topic, payload] of forged) {
    const mallory = await connect(url, opts('mallory', secrets.mallory!, 'mallory'))
    assert.notEqual(await publishRefused(mallory, topic, payload), 'accepted', `device publishing ${topic}`)
    await end(mallory)
    const client = await connect(url, opts('ha', secrets.ha!, 'ha-forger'))
    assert.notEqual(await publishRefused(client, topic, payload), 'accepted', `operator publishing ${topic}`)
    await end(client)
  }
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'acl_publish' }) - before, forged.length * 2)
  await new Promise((r) => setTimeout(r, scaled(300)))
  const seen = got.slice(mark).filter((p) => forged.some(([t]) => t === p.topic))
  assert.deepEqual(seen.map((p) => p.topic), [], 'nothing forged reached HA')
})

test('7. homeassistant/status online republishes everything; a flood of births costs one more republish, not a loop', async () => {
  await new Promise((r) => setTimeout(r, COOLDOWN_MS)) // any earlier republish window is over
  const retainedConfigs = new Set(got.filter((p) => p.topic.endsWith('/config') && p.payload.length > 0).map((p) => p.topic))
  const mark = got.length
  await ha.publishAsync('homeassistant/status', 'online', { qos: 1 })
  const republished = () => got.slice(mark).filter((p) => p.topic.endsWith('/config') && !p.retain)
  await waitFor('full republish', () => new Set(republished().map((p) => p.topic)).size >= retainedConfigs.size)
  assert.deepEqual(new Set(republished().map((p) => p.topic)), retainedConfigs, 'every config, again')
  for (const p of republished()) assertValidDiscovery(p.topic, json(p))
  const after = got.slice(mark)
  assert.ok(after.some((p) => p.topic === `edgeway/${NODE}/status` && p.payload.toString() === 'online'), 'gateway availability')
  assert.ok(after.some((p) => p.topic === `edgeway/${NODE}/devices/pump-1/availability` && p.payload.toString() === 'online'), 'device availability')
  assert.ok(after.some((p) => p.topic === `edgeway/${NODE}/devices/pump-1/state`), 'latest state')
  // A flood inside the window: exactly one more republish, at its end.
  for (let i = 0; i < 50; i++) void ha.publish('homeassistant/status', 'online', { qos: 0 })
  await new Promise((r) => setTimeout(r, COOLDOWN_MS * 2 + scaled(500)))
  const runs = g.logs.filter((l) => l.msg === 'home assistant birth: republishing discovery, availability and state').length
  assert.equal(runs, 2, 'one republish for the first birth, one for the flood')
  assert.equal(republished().length, retainedConfigs.size * 2)
  // "offline" (HA's will) republishes nothing.
  const mark2 = got.length
  await ha.publishAsync('homeassistant/status', 'offline', { qos: 1 })
  await new Promise((r) => setTimeout(r, COOLDOWN_MS + scaled(300)))
  assert.equal(got.slice(mark2).filter((p) => p.topic.endsWith('/config')).length, 0)
})

test('8. removing a device clears its retained configs and availability', async () => {
  const topics = new Set(got.filter(configsOf('pump-1')).map((p) => p.topic))
  assert.ok(topics.size >= 5)
  const mark = got.length
  const r = await g.cli(['device', 'remove', 'pump-1'])
  assert.equal(r.code, 0, r.stderr)
  const cleared = await waitFor('empty retained configs', () => {
    const empty = new Set(got.slice(mark).filter((p) => p.payload.length === 0).map((p) => p.topic))
    return [...topics].every((t) => empty.has(t)) && empty.has(`edgeway/${NODE}/devices/pump-1/availability`) && empty
  })
  assert.ok(cleared.size >= topics.size + 1)
  // A Home Assistant subscribing now finds nothing of pump-1.
  const fresh = await connect(url, opts('ha-view', secrets['ha-view']!, 'ha-fresh'))
  const freshGot = collect(fresh)
  await fresh.subscribeAsync(['homeassistant/#', `edgeway/${NODE}/#`], { qos: 1 })
  await waitFor('gateway config retained', () => freshGot.find((p) => p.topic.includes('gateway__status')))
  await new Promise((r) => setTimeout(r, scaled(300)))
  assert.deepEqual(freshGot.filter((p) => p.topic.includes('pump-1')).map((p) => p.topic), [])
  await end(fresh)
})

test('9. a clean stop publishes the gateway offline (retained); the next start online again', async () => {
  const stopped = g.stop()
  await waitFor('offline', () => got.find((p) => p.topic === `edgeway/${NODE}/status` && p.payload.toString() === 'offline'), 5000)
  assert.equal(await stopped, 0)
  await g.start()
  const c = await connect(url, opts('ha-view', secrets['ha-view']!, 'ha-after'))
  const after = collect(c)
  await c.subscribeAsync(`edgeway/${NODE}/status`, { qos: 1 })
  await waitFor('online after restart', () => after.find((p) => p.payload.toString() === 'online'))
  await end(c)
})
