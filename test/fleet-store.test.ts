// The fleet's SQLite of last-known state: what a fleet saved is what a restarted fleet shows at once (same states by
// age, devices, alerts, restarts), and a damaged row does not stop the rest from loading.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { birthMessage, heartbeatMessage, deathMessage, type LifecycleContext, type LifecycleOut } from '../bridges/amqp/lifecycle.ts'
import { decodeLifecycle, gatewayAddress, type Lifecycle } from '../fleet/message.ts'
import { FleetModel } from '../fleet/model.ts'
import { FleetStore } from '../fleet/store.ts'
import { openDatabase } from '../gateway/store/sqlite.ts'
import { tempDir } from './helpers/net.ts'

const ctx = (gateway: string, bootId: string): LifecycleContext => ({ gateway, address: `/exchange/amq.topic/status.${gateway}`, bootId, heartbeatSeconds: 1 })
const dec = (o: LifecycleOut): Lifecycle => {
  const d = decodeLifecycle({ subject: o.subject, applicationProperties: o.application_properties, body: o.body, routedFor: o.application_properties.gateway, ttlMs: o.ttl ?? null }, { maxDevices: 100, maxAlerts: 10 })
  assert.ok(d.ok)
  return d.message
}
const limits = { maxGateways: 100, maxDevices: 100, maxAlerts: 10, defaultTtlSeconds: 60 }
const devs = [{ id: 'd1', online: true, link: 'mqtt', firmware: '2.1', lastSeen: 5 }]

test('a restarted fleet shows the last known fleet from its store', () => {
  const { dir, cleanup } = tempDir('edgeway-fleet-store-')
  try {
    const t = 1_700_000_000_000
    const m = new FleetModel(limits)
    m.ingest(dec(birthMessage(ctx('gw-a', 'b1'), { version: '1.2.3', configDigest: 'abcd' }, devs, t, 1)), t)
    m.ingest(dec(heartbeatMessage(ctx('gw-a', 'b1'), { version: '1.2.3', backlog: { depth: 42, bytes: 1, oldestAgeSeconds: 9, deadLettered: 0 }, upstreams: [{ name: 'c', connected: true, lag: 3 }], alerts: [{ id: 'x', rule: 'threshold', severity: 'critical', since: t, text: 'hot' }] }, devs, t, 2)), t)
    m.ingest(dec(birthMessage(ctx('gw-b', 'b1'), { version: '1.2.3', configDigest: 'abcd' }, [], t, 1)), t)
    m.ingest(dec(birthMessage(ctx('gw-b', 'b2'), { version: '1.2.4', configDigest: 'abcd' }, [], t + 500, 1)), t + 500)
    m.ingest(dec(birthMessage(ctx('gw-c', 'b1'), { version: '1.2.3', configDigest: 'abcd' }, [], t, 1)), t)
    m.ingest(dec(deathMessage(ctx('gw-c', 'b1'), t + 600, 2)), t + 600)
    const s = new FleetStore(dir)
    s.open()
    s.save(m.takeDirty(), t + 1000)
    assert.deepEqual(m.takeDirty(), [], 'nothing is dirty after a flush')
    s.close()

    const s2 = new FleetStore(dir)
    s2.open()
    const m2 = new FleetModel(limits)
    m2.restore(s2.load(), t + 1000)
    s2.close()
    assert.deepEqual(m2.views(t + 1000), m.views(t + 1000), 'the same fleet, field for field')
    const a = m2.view('gw-a', t + 1000)!
    assert.deepEqual([a.state, a.version, a.backlog!.depth, a.upstreamLag, a.devicesOnline, a.devicesTotal, a.alerts[0]!.text], ['online', '1.2.3', 42, 3, 1, 1, 'hot'])
    assert.deepEqual([m2.view('gw-b', t + 1000)!.restarts, m2.view('gw-c', t + 1000)!.state], [1, 'dead'])
    assert.deepEqual(m2.devices('gw-a')!.map((d) => [d.id, d.firmware]), [['d1', '2.1']])
    // Time goes on after the restart: the restored gateway goes stale by its age like any other.
    assert.equal(m2.view('gw-a', t + 3001 + 1000)!.state, 'stale')

    // A damaged row is skipped, the others load.
    const db = openDatabase(join(dir, 'fleet.db'), { synchronous: 'NORMAL' })
    db.prepare("UPDATE gateways SET record = '{broken' WHERE id = 'gw-b'").run()
    db.close()
    const s3 = new FleetStore(dir)
    s3.open()
    assert.deepEqual(s3.load().map((g) => g.id).sort(), ['gw-a', 'gw-c'])
    s3.close()
  } finally { cleanup() }
})
