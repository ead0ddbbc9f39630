// Home Assistant discovery mapping (bridges/homeassistant/discovery.ts), the birth-message rate limit and the role
// rules HA needs, checked against the keys and types Home Assistant documents for each platform.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  metricDiscovery, commandDiscovery, declaredCommands, deviceDiscovery, gatewayDiscovery, gatewayTopics, haRoles, objectId,
  type DeviceInfo, type GatewayInfo,
} from '../bridges/homeassistant/discovery.ts'
import { BirthLimiter } from '../bridges/homeassistant/birth.ts'
import { resolveHomeAssistant, homeAssistantSection } from '../bridges/homeassistant/config.ts'
import { BUILTIN_ROLES, resolveRoles } from '../gateway/broker/roles.ts'
import { mayPublishAsPrincipal, maySubscribeAsPrincipal } from '../gateway/broker/identity.ts'
import { classifyTopic } from '../gateway/broker/policy.ts'

import { assertValidDiscovery } from './helpers/ha-schema.ts'

const G: GatewayInfo = { discoveryPrefix: 'homeassistant', nodeId: 'gw1', gatewayId: 'gw1', version: '0.1.0' }
const DEV: DeviceInfo = {
  id: 'greenhouse.1', firmware: '1.4.2', link: 'mqtt',
  metadata: {
    name: 'Greenhouse', metrics: { temperature: { unit: '°C', name: 'Temperature' }, humidity: { unit: '%' }, energy: { unit: 'kWh' } },
    commands: [
      { name: 'reboot' },
      { name: 'setInterval', args: { ms: { type: 'integer', required: true } } },
      { name: 'blink', args: { times: { type: 'integer', default: 3 } } },
      { name: 'pump', kind: 'switch', args: { on: { type: 'boolean', required: true } }, state: 'pump' },
      { name: 'fan', kind: 'switch' },
      { name: 'bad name!' },
      { name: 'odd', kind: 'dial' },
    ],
  },
}

test('numbers are sensors with unit, device class and state class from the metadata; the template reads the state JSON', () => {
  const t = metricDiscovery(G, DEV, 'temperature', 'number')
  assert.equal(t.component, 'sensor')
  assert.equal(t.topic, `homeassistant/sensor/gw1/${objectId('greenhouse.1', 'temperature')}/config`)
  assertValidDiscovery(t.topic, t.config)
  assert.equal(t.config.unit_of_measurement, '°C')
  assert.equal(t.config.device_class, 'temperature')
  assert.equal(t.config.state_class, 'measurement')
  assert.equal(t.config.name, 'Temperature')
  assert.equal(t.config.state_topic, 'edgeway/gw1/devices/greenhouse.1/state')
  assert.equal(t.config.value_template, '{{ value_json["temperature"] }}')
  assert.deepEqual(t.config.availability, [
    { topic: 'edgeway/gw1/status', payload_available: 'online', payload_not_available: 'offline' },
    { topic: 'edgeway/gw1/devices/greenhouse.1/availability', payload_available: 'online', payload_not_available: 'offline' },
  ])
  assert.equal(t.config.availability_mode, 'all')
  assert.deepEqual(t.config.device, {
    identifiers: ['edgeway_gw1_' + objectId('greenhouse.1')], name: 'Greenhouse', manufacturer: 'edgeway', model: 'edgeway device',
    sw_version: '1.4.2', via_device: 'edgeway_gw1',
  })
  const h = metricDiscovery(G, DEV, 'humidity', 'number')
  assert.equal(h.config.device_class, 'humidity')
  assert.equal(h.config.name, 'humidity', 'no display name: the metric')
  const e = metricDiscovery(G, DEV, 'energy', 'number')
  assert.equal(e.config.device_class, 'energy')
  assert.equal(e.config.state_class, 'total_increasing')
  const plain = metricDiscovery(G, DEV, 'rssi_raw', 'number')
  assert.equal(plain.config.unit_of_measurement, undefined)
  assert.equal(plain.config.device_class, undefined)
  assert.equal(plain.config.state_class, 'measurement')
  assertValidDiscovery(plain.topic, plain.config)
})

test('strings are sensors without unit or class, booleans are binary sensors', () => {
  const s = metricDiscovery(G, DEV, 'mode', 'string')
  assert.equal(s.component, 'sensor')
  assertValidDiscovery(s.topic, s.config)
  for (const k of ['unit_of_measurement', 'device_class', 'state_class']) assert.equal(s.config[k], undefined, k)
  const b = metricDiscovery(G, DEV, 'door "open"', 'boolean')
  assert.equal(b.component, 'binary_sensor')
  assert.match(b.topic, /^homeassistant\/binary_sensor\/gw1\/[A-Za-z0-9_-]+\/config$/)
  assertValidDiscovery(b.topic, b.config)
  assert.equal(b.config.value_template, `{{ 'ON' if value_json["door \\"open\\""] else 'OFF' }}`, 'the key as a JSON (= Jinja) string literal')
  assert.equal(b.config.payload_on, 'ON')
})

test('object ids stay in HA\'s alphabet and distinct after sanitising', () => {
  assert.equal(objectId('dev', 'temp'), 'dev__temp')
  assert.match(objectId('a.b', 'x'), /^[A-Za-z0-9_-]+$/)
  assert.notEqual(objectId('a.b', 'x'), objectId('a_b', 'x'))
  assert.notEqual(objectId('d', 'm/1'), objectId('d', 'm+1'))
})

test('declared commands: buttons by default, switches where declared; unpressable and malformed entries left out', () => {
  const cs = declaredCommands(DEV.metadata)
  assert.deepEqual(cs.map((c) => [c.name, c.kind]), [['reboot', 'button'], ['blink', 'button'], ['pump', 'switch'], ['fan', 'switch']])
  const reboot = commandDiscovery(G, DEV, cs[0]!)
  assert.equal(reboot.component, 'button')
  assertValidDiscovery(reboot.topic, reboot.config)
  assert.equal(reboot.config.command_topic, 'devices/greenhouse.1/cmd/reboot')
  assert.deepEqual(JSON.parse(reboot.config.payload_press as string), { id: 'ha:greenhouse.1:reboot', args: null }, 'the gateway\'s command format')
  const blink = commandDiscovery(G, DEV, cs[1]!)
  assert.deepEqual(JSON.parse(blink.config.payload_press as string).args, { times: 3 }, 'declared defaults are the args')
  const pump = commandDiscovery(G, DEV, cs[2]!)
  assert.equal(pump.component, 'switch')
  assertValidDiscovery(pump.topic, pump.config)
  assert.deepEqual(JSON.parse(pump.config.payload_on as string), { id: 'ha:greenhouse.1:pump:on', args: { on: true } })
  assert.deepEqual(JSON.parse(pump.config.payload_off as string), { id: 'ha:greenhouse.1:pump:off', args: { on: false } })
  assert.equal(pump.config.state_topic, 'edgeway/gw1/devices/greenhouse.1/state')
  assert.equal(pump.config.value_template, `{{ 'ON' if value_json["pump"] else 'OFF' }}`)
  assert.equal(pump.config.state_on, 'ON')
  const fan = commandDiscovery(G, DEV, cs[3]!)
  assert.equal(fan.config.optimistic, true, 'no state metric: optimistic')
  assert.equal(fan.config.state_topic, undefined)
  assertValidDiscovery(fan.topic, fan.config)
})

test('a device: seen metrics with their kinds plus declared ones; commands only where presses can reach it over MQTT', () => {
  const all = deviceDiscovery(G, DEV, new Map([['temperature', 'number'], ['door', 'boolean']]))
  const names = all.map((x) => `${x.component}:${x.config.unique_id as string}`)
  assert.equal(all.length, 4 + 4, JSON.stringify(names))
  for (const x of all) assertValidDiscovery(x.topic, x.config)
  assert.equal(new Set(all.map((x) => x.topic)).size, all.length, 'distinct topics')
  assert.equal(new Set(all.map((x) => x.config.unique_id)).size, all.length, 'distinct unique ids')
  const serial = deviceDiscovery(G, { ...DEV, link: 'serial' }, new Map())
  assert.equal(serial.filter((x) => x.component === 'button' || x.component === 'switch').length, 0)
  const gw = gatewayDiscovery(G)
  assertValidDiscovery(gw.topic, gw.config)
  assert.deepEqual((gw.config.device as { identifiers: string[] }).identifiers, ['edgeway_gw1'], 'what via_device names')
})

test('config: disabled by default, node id from the gateway id in HA\'s alphabet, prefix validated', () => {
  const c = homeAssistantSection.parse({})
  assert.equal(c.enabled, false)
  assert.equal(c.discoveryPrefix, 'homeassistant')
  assert.equal(resolveHomeAssistant(c, 'green.house-1').nodeId, 'green_house-1')
  assert.equal(resolveHomeAssistant(homeAssistantSection.parse({ nodeId: 'n1' }), 'gw').nodeId, 'n1')
  assert.equal(homeAssistantSection.safeParse({ discoveryPrefix: 'ha/#' }).success, false)
  assert.equal(homeAssistantSection.safeParse({ nodeId: 'a.b' }).success, false)
})

test('birth limiter: one run per window, one more at its end for any number of requests inside it', () => {
  let now = 0
  let runs = 0
  const timers: { fn: () => void; at: number }[] = []
  const l = new BirthLimiter({ windowMs: 1000, run: () => { runs++ }, now: () => now, setTimer: (fn, ms) => { timers.push({ fn, at: now + ms }); return {} }, clearTimer: () => undefined })
  assert.equal(l.request(), 'now')
  assert.equal(runs, 1)
  assert.equal(l.request(), 'scheduled')
  for (let i = 0; i < 100; i++) assert.equal(l.request(), 'suppressed')
  assert.equal(runs, 1)
  assert.equal(timers.length, 1)
  assert.equal(timers[0]!.at, 1000)
  now = 1000
  timers.shift()!.fn()
  assert.equal(runs, 2)
  now = 1500
  assert.equal(l.request(), 'scheduled', 'within the window of the deferred run')
  now = 2000
  timers.shift()!.fn()
  assert.equal(runs, 3)
  now = 5000
  assert.equal(l.request(), 'now')
  assert.equal(runs, 4)
})

test('roles: observers read discovery and state and send HA\'s birth, only operators press; nobody writes the gateway\'s topics', () => {
  const roles = haRoles(resolveRoles({ custom: { rules: [{ allow: 'both', topic: '#' }] } }), BUILTIN_ROLES, { discoveryPrefix: 'homeassistant', nodeId: 'gw1' })
  const as = (role: string) => ({ kind: 'client' as const, name: 'ha', role: roles.get(role)! })
  const anon = roles.get('anonymous')
  const pub = (p: Parameters<typeof mayPublishAsPrincipal>[0], topic: string) => mayPublishAsPrincipal(p, topic, classifyTopic(topic), anon).ok
  const sub = (p: Parameters<typeof maySubscribeAsPrincipal>[0], f: string) => maySubscribeAsPrincipal(p, f, anon).ok
  for (const r of ['observer', 'operator']) {
    assert.ok(sub(as(r), 'homeassistant/#'), r)
    assert.ok(sub(as(r), 'edgeway/gw1/devices/+/state'), r)
    assert.ok(sub(as(r), 'edgeway/gw1/status'), r)
    assert.ok(pub(as(r), 'homeassistant/status'), `${r} sends the birth message`)
  }
  assert.equal(pub(as('observer'), 'devices/d1/cmd/reboot'), false, 'observers cannot press')
  assert.equal(pub(as('operator'), 'devices/d1/cmd/reboot'), true, 'operators can')
  const forged = ['homeassistant/sensor/gw1/x/config', 'homeassistant/binary_sensor/y/config', 'edgeway/gw1/devices/d1/availability', 'edgeway/gw1/status']
  for (const who of [as('observer'), as('operator'), as('custom'), { kind: 'device' as const, id: 'd1' }, { kind: 'anonymous' as const, id: 'd1' }, { kind: 'open' as const, id: 'lab' }]) {
    for (const t of forged) assert.equal(pub(who, t), false, `${JSON.stringify(who.kind)} may not publish ${t}`)
  }
  assert.ok(pub(as('custom'), 'homeassistant/status'), 'a custom role that allows it may still send a birth')
  assert.ok(pub({ kind: 'open', id: 'lab' }, 'anything/else'), 'the lab mode is otherwise unchanged')
  assert.ok(sub({ kind: 'open', id: 'lab' }, '#'))
  const untouched = haRoles(resolveRoles({ observer: { rules: [{ allow: 'subscribe', topic: 'devices/+/telemetry' }] } }), BUILTIN_ROLES, { discoveryPrefix: 'homeassistant', nodeId: 'gw1' })
  assert.equal(maySubscribeAsPrincipal({ kind: 'client', name: 'ha', role: untouched.get('observer')! }, 'homeassistant/#', undefined).ok, false, 'a configured observer gets no allow rules it did not write')
  assert.deepEqual(gatewayTopics({ discoveryPrefix: 'homeassistant', nodeId: 'gw1' }).birth, 'homeassistant/status')
})
