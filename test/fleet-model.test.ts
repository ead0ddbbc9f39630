// The fleet's pure parts: decoding lifecycle messages (built by the gateway's own builders in bridges/amqp/lifecycle.ts,
// so the two sides of the contract are tested together), refusing spoofed ones, and the state model over a fake clock:
// online / stale / dead, restart by bootId, death, alerts in and out, bounds.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { birthMessage, heartbeatMessage, presenceMessage, deathMessage, alertMessage, type LifecycleContext, type LifecycleOut } from '../bridges/amqp/lifecycle.ts'
import { decodeLifecycle, gatewayAddress, type Lifecycle, type RawLifecycle } from '../fleet/message.ts'
import { FleetModel, stateOf } from '../fleet/model.ts'
import { CommandTracker, commandMessage, requestProblem } from '../fleet/commands.ts'
import { amqpToCommand } from '../bridges/amqp/map.ts'

const ADDRESS = '/exchange/amq.topic/status.*'
const limits = { maxDevices: 100, maxAlerts: 10 }
const ctx = (gateway: string, bootId: string, heartbeatSeconds = 2): LifecycleContext => ({ gateway, address: `/exchange/amq.topic/status.${gateway}`, bootId, heartbeatSeconds })
const raw = (o: LifecycleOut, routedFor: string | null = o.application_properties.gateway): RawLifecycle => ({ subject: o.subject, applicationProperties: o.application_properties, body: o.body, routedFor, ttlMs: o.ttl ?? null })
const dec = (o: LifecycleOut, routedFor?: string | null): Lifecycle => {
  const d = decodeLifecycle(raw(o, routedFor), limits)
  assert.ok(d.ok, `decoded: ${JSON.stringify(d)}`)
  return d.message
}
const devs = [{ id: 'd1', online: true, link: 'mqtt', firmware: '1.0', lastSeen: 1000 }, { id: 'd2', online: false, link: null, firmware: null, lastSeen: null }]
const snapshot = { version: '0.1.0', uptimeSeconds: 5, backlog: { depth: 7, bytes: 700, oldestAgeSeconds: 3, deadLettered: 0 }, upstreams: [{ name: 'cloud', connected: true, lag: 4 }], alerts: [] }

test('each gateway\'s own status address under a one-wildcard status address', () => {
  assert.equal(gatewayAddress(ADDRESS)!('gw-1'), '/exchange/amq.topic/status.gw-1')
  assert.equal(gatewayAddress('/exchange/amq.topic/site.*.status')!('gw9'), '/exchange/amq.topic/site.gw9.status')
  assert.equal(gatewayAddress('/queue/status'), null)
  assert.equal(gatewayAddress('/exchange/amq.topic/status.#'), null)
  assert.equal(gatewayAddress('/exchange/amq.topic/*.*'), null)
})

test('the gateway\'s real messages decode; a message speaking for another gateway is refused as spoofed', () => {
  const b = dec(birthMessage(ctx('gw1', 'boot-a'), { version: '0.1.0', configDigest: '0123456789abcdef' }, devs, 1000, 1))
  assert.equal(b.kind, 'birth')
  assert.equal(b.ttlSeconds, 6)
  assert.equal(b.bootId, 'boot-a')
  if (b.kind === 'birth') assert.deepEqual(b.devices!.map((d) => [d.id, d.online, d.link]), [['d1', true, 'mqtt'], ['d2', false, null]])
  const s = dec(heartbeatMessage(ctx('gw1', 'boot-a'), snapshot, devs, 2000, 2))
  assert.equal(s.kind, 'status')
  if (s.kind === 'status') { assert.equal(s.devicesTotal, 2); assert.equal(s.backlog!.depth, 7); assert.equal(s.upstreams[0]!.lag, 4) }
  // Received on gw2's own link (routed as gw2) but claiming gw1: refused.
  const spoof = decodeLifecycle(raw(heartbeatMessage(ctx('gw1', 'x'), snapshot, devs, 1, 1), 'gw2'), limits)
  assert.deepEqual([spoof.ok, !spoof.ok && spoof.reason], [false, 'spoofed'])
  // Body and application properties disagree: refused.
  const o = heartbeatMessage(ctx('gw1', 'x'), snapshot, devs, 1, 1)
  const forged = decodeLifecycle({ ...raw(o), body: Buffer.from(JSON.stringify({ ...JSON.parse(o.body.toString()), gateway: 'gw3' })) }, limits)
  assert.deepEqual([forged.ok, !forged.ok && forged.reason], [false, 'spoofed'])
  const junk = decodeLifecycle({ subject: 'status', applicationProperties: { gateway: 'gw1' }, body: Buffer.from('not json'), routedFor: 'gw1', ttlMs: null }, limits)
  assert.deepEqual([junk.ok, !junk.ok && junk.reason], [false, 'malformed'])
  const future = decodeLifecycle({ subject: 'status', applicationProperties: { gateway: 'gw1' }, body: Buffer.from(JSON.stringify({ schema: 2, kind: 'status', gateway: 'gw1' })), routedFor: 'gw1', ttlMs: null }, limits)
  assert.deepEqual([future.ok, !future.ok && future.reason], [false, 'schema'])
})

test('online while messages arrive within the ttl, stale after it, dead after 2 more ttls; a death is dead at once', () => {
  const m = new FleetModel({ maxGateways: 10, maxDevices: 100, maxAlerts: 10, defaultTtlSeconds: 180 })
  const t0 = 1_000_000
  const r = m.ingest(dec(birthMessage(ctx('gw1', 'a'), { version: '1', configDigest: 'x' }, devs, t0, 1)), t0)
  assert.ok(r.ok)
  assert.deepEqual(r.ok && r.transitions.map((x) => [x.from, x.to]), [[null, 'online']])
  m.ingest(dec(heartbeatMessage(ctx('gw1', 'a'), snapshot, devs, t0 + 2000, 2)), t0 + 2000)
  assert.equal(m.view('gw1', t0 + 2000 + 6000)!.state, 'online', 'exactly ttl old is still online')
  assert.deepEqual(m.tick(t0 + 2000 + 6000), [])
  assert.equal(m.view('gw1', t0 + 2000 + 6001)!.state, 'stale')
  assert.deepEqual(m.tick(t0 + 2000 + 6001).map((x) => x.to), ['stale'])
  assert.equal(m.view('gw1', t0 + 2000 + 18000)!.state, 'stale')
  assert.equal(m.view('gw1', t0 + 2000 + 18001)!.state, 'dead')
  assert.deepEqual(m.tick(t0 + 2000 + 18001).map((x) => x.to), ['dead'])
  // A heartbeat of the same process brings it back.
  const back = m.ingest(dec(heartbeatMessage(ctx('gw1', 'a'), snapshot, devs, t0 + 30000, 3)), t0 + 30000)
  assert.deepEqual(back.ok && back.transitions.map((x) => x.to), ['online'])
  const v = m.view('gw1', t0 + 30000)!
  assert.deepEqual([v.version, v.backlog!.depth, v.upstreamLag, v.devicesOnline, v.devicesTotal, v.restarts], ['0.1.0', 7, 4, 1, 2, 0])
  // Death: dead now; a late heartbeat of that same process does not revive it.
  // A death of another process (a late message of an earlier run) is ignored.
  m.ingest(dec(deathMessage(ctx('gw1', 'older'), t0 + 30500, 9)), t0 + 30500)
  assert.deepEqual([m.view('gw1', t0 + 30500)!.state, m.view('gw1', t0 + 30500)!.bootId], ['online', 'a'])
  m.ingest(dec(deathMessage(ctx('gw1', 'a'), t0 + 31000, 4)), t0 + 31000)
  assert.equal(m.view('gw1', t0 + 31000)!.state, 'dead')
  assert.equal(m.view('gw1', t0 + 31000)!.deathReason, 'shutdown')
  m.ingest(dec(heartbeatMessage(ctx('gw1', 'a'), snapshot, devs, t0 + 31500, 5)), t0 + 31500)
  assert.equal(m.view('gw1', t0 + 31500)!.state, 'dead')
  // A birth with a new bootId: restarted, online again, old alerts gone.
  const re = m.ingest(dec(birthMessage(ctx('gw1', 'b'), { version: '2', configDigest: 'y' }, devs, t0 + 40000, 1)), t0 + 40000)
  assert.ok(re.ok && re.transitions.some((x) => /restarted/.test(x.why) && x.to === 'online'))
  const after = m.view('gw1', t0 + 40000)!
  assert.deepEqual([after.state, after.restarts, after.bootId, after.version, after.lastBirthAt], ['online', 1, 'b', '2', t0 + 40000])
})

test('presence and alerts update a gateway; the ttl falls back to the AMQP header, then to the default', () => {
  const m = new FleetModel({ maxGateways: 10, maxDevices: 100, maxAlerts: 2, defaultTtlSeconds: 30 })
  m.ingest(dec(birthMessage(ctx('gw1', 'a'), { version: '1', configDigest: 'x' }, devs, 0, 1)), 0)
  m.ingest(dec(presenceMessage(ctx('gw1', 'a'), { device: 'd2', online: true, link: 'serial', at: 10 }, 2)), 10)
  m.ingest(dec(presenceMessage(ctx('gw1', 'a'), { device: 'd3', online: true, link: 'mqtt', at: 11 }, 3)), 11)
  assert.deepEqual(m.devices('gw1')!.map((d) => [d.id, d.online, d.link]), [['d1', true, 'mqtt'], ['d2', true, 'serial'], ['d3', true, 'mqtt']])
  const alert = { id: 'device_offline:d1', rule: 'device_offline' as const, severity: 'warning' as const, since: 5, text: 'd1 is offline', device: 'd1' }
  m.ingest(dec(alertMessage(ctx('gw1', 'a'), { type: 'raised', alert, text: alert.text, at: 20 })), 20)
  assert.deepEqual(m.view('gw1', 20)!.alerts.map((a) => [a.id, a.text, a.device]), [['device_offline:d1', 'd1 is offline', 'd1']])
  m.ingest(dec(alertMessage(ctx('gw1', 'a'), { type: 'cleared', alert, text: 'd1 is back', at: 30 })), 30)
  assert.deepEqual(m.view('gw1', 30)!.alerts, [])
  // Heartbeat alerts replace the list, bounded by maxAlerts.
  const many = [1, 2, 3].map((i) => ({ id: `a${i}`, rule: 'threshold', severity: 'critical', since: 1, text: `t${i}` }))
  m.ingest(dec(heartbeatMessage(ctx('gw1', 'a'), { ...snapshot, alerts: many }, devs, 40, 4)), 40)
  assert.deepEqual(m.view('gw1', 40)!.alerts.map((a) => a.id), ['a1', 'a2'])
  assert.equal(m.counters.alertsCut, 1)
  // An old-style heartbeat (no ttlSeconds in the body, no bootId): the AMQP ttl decides; without one, the default.
  const legacy = (ttlMs: number | null): Lifecycle => {
    const d = decodeLifecycle({ subject: 'status', applicationProperties: { gateway: 'old', kind: 'status' }, body: Buffer.from(JSON.stringify({ gateway: 'old', at: new Date(0).toISOString(), version: '0.0.9' })), routedFor: 'old', ttlMs }, limits)
    assert.ok(d.ok); return d.message
  }
  m.ingest(legacy(9000), 0)
  assert.equal(m.view('old', 0)!.ttlSeconds, 9)
  const m2 = new FleetModel({ maxGateways: 10, maxDevices: 100, maxAlerts: 2, defaultTtlSeconds: 30 })
  m2.ingest(legacy(null), 0)
  assert.equal(m2.view('old', 0)!.ttlSeconds, 30)
})

test('bounds: gateways beyond maxGateways are refused and counted, device lists are cut', () => {
  const m = new FleetModel({ maxGateways: 2, maxDevices: 1, maxAlerts: 10, defaultTtlSeconds: 30 })
  for (const id of ['g1', 'g2', 'g3', 'g4']) m.ingest(dec(birthMessage(ctx(id, 'a'), { version: '1', configDigest: 'x' }, devs, 0, 1)), 0)
  assert.equal(m.size, 2)
  assert.equal(m.counters.refused.too_many_gateways, 2)
  assert.equal(m.devices('g1')!.length, 1)
  assert.equal(m.counters.devicesCut, 2)
  // A known gateway still updates at the cap.
  m.ingest(dec(heartbeatMessage(ctx('g1', 'a'), snapshot, devs, 5000, 2)), 5000)
  assert.equal(stateOf(m.takeDirty().find((g) => g.id === 'g1')!, 5000), 'online')
})

test('commands: the message the gateway reads, replies matched by correlation id and gateway, timeouts reported', async () => {
  assert.equal(requestProblem({ gateway: 'gw1', device: 'd1', name: 'ping', args: {} }), null)
  assert.match(requestProblem({ gateway: 'gw1', device: '<script>', name: 'ping' })!, /device/)
  const out = commandMessage('fleet-1', { gateway: 'gw1', device: 'd1', name: 'set', args: { on: true } }, '/queue/r', 5000, 1000)
  const parsed = amqpToCommand({ ...out, body: out.body }, 1500)
  assert.ok(parsed.ok)
  assert.deepEqual(parsed.ok && [parsed.command.id, parsed.command.device, parsed.command.name, parsed.command.args, parsed.command.expiresAt, parsed.replyTo], ['fleet-1', 'd1', 'set', { on: true }, 6000, '/queue/r'])
  const t = new CommandTracker(200)
  const a = t.begin({ gateway: 'gw1', device: 'd1', name: 'ping', args: null })
  assert.ok(a.id)
  // Another gateway answering gw1's command is ignored.
  assert.equal(t.reply({ correlationId: a.id, applicationProperties: { gateway: 'gw2' }, body: Buffer.from('{"ok":true,"result":1}') }), 'foreign')
  assert.equal(t.reply({ correlationId: a.id, applicationProperties: { gateway: 'gw1' }, body: Buffer.from('{"ok":true,"result":{"pong":1}}') }), 'matched')
  assert.deepEqual(await a.result, { ok: true, result: { pong: 1 } })
  assert.equal(t.reply({ correlationId: a.id, applicationProperties: { gateway: 'gw1' }, body: Buffer.from('{}') }), 'unmatched')
  const b = t.begin({ gateway: 'gw1', device: 'd1', name: 'ping', args: null })
  assert.ok(b.id)
  const r = await b.result
  assert.equal(r.ok, false)
  assert.equal(!r.ok && r.code, 'timeout')
  assert.equal(t.counters.timedOut, 1)
})
