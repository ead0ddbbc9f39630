// A RabbitMQ cluster as the amqp upstream: 3 nodes on this machine, one quorum queue, 2 gateways with `hosts` in
// different orders under steady MQTT load. The node each gateway is connected to is stopped (one at a time: a quorum
// needs 2 of 3) and started again. Every reading a device got a PUBACK for must be in the quorum queue at the end, in
// per-device order, with duplicates only from the in-flight window of each failover. Failover times are printed.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { startGatewayProc, type GatewayProc, type LogLine } from './helpers/gateway.ts'
import { startRabbitCluster, type RabbitCluster, type ClusterNode } from './helpers/rabbitmq-cluster.ts'
import { amqpConsumer, connectAmqp } from './helpers/amqp.ts'
import { simulateDevice, audit, type DeviceSim } from './helpers/load.ts'
import { scaled, waitFor } from './helpers/net.ts'
import { checkQuorumQueue } from '../bridges/amqp/queue-check.ts'
import type { AmqpUpstreamConfig } from '../bridges/amqp/config.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

const MAX_INFLIGHT = 64
let cluster: RabbitCluster

before(async () => {
  cluster = await startRabbitCluster(3)
  cleanups.push(() => cluster.cleanup())
})

const creds = { username: 'guest', password: 'guest', address: '/amq/queue/x' } as unknown as AmqpUpstreamConfig

test('the quorum check: a missing queue is refused unless declared, a classic queue is refused, a quorum queue passes on every node', { timeout: scaled(120000) }, async () => {
  const [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode]
  const missing = await checkQuorumQueue(creds, '127.0.0.1', n1.port, 'qcheck', false, scaled(10000))
  assert.equal(missing.ok, false)
  assert.match(!missing.ok ? missing.error : '', /does not exist/)
  assert.deepEqual(await checkQuorumQueue(creds, '127.0.0.1', n1.port, 'qcheck', true, scaled(10000)), { ok: true, created: true })
  assert.deepEqual(await checkQuorumQueue(creds, '127.0.0.1', n3.port, 'qcheck', false, scaled(10000)), { ok: true, created: false })
  // A classic queue, the way RabbitMQ's AMQP 1.0 plugin makes one (a /queue/ address).
  const conn = await connectAmqp(n2.port)
  cleanups.push(() => conn.close())
  await new Promise<void>((resolve) => conn.open_sender({ target: { address: '/queue/classic-q', durable: 1 } }).once('sendable', () => resolve()))
  const classic = await checkQuorumQueue(creds, '127.0.0.1', n2.port, 'classic-q', true, scaled(10000))
  assert.equal(classic.ok, false)
  assert.equal(!classic.ok && classic.permanent, true)
  assert.match(!classic.ok ? classic.error : '', /not a quorum queue/)
  const types = (await cluster.ctl(['list_queues', 'name', 'type', '--formatter', 'json'])).out
  const parsed = JSON.parse(types.slice(types.indexOf('['))) as { name: string; type: string }[]
  assert.equal(parsed.find((q) => q.name === 'qcheck')?.type, 'quorum')
  assert.equal(parsed.find((q) => q.name === 'classic-q')?.type, 'classic')
})

interface Failover { gateway: string; stoppedNode: number; toEndpoint: string; stopToConnectedMs: number; downToConnectedMs: number }

test('2 gateways, steady load, the node each is connected to stopped and brought back: 0 acked readings lost, order held, duplicates within the in-flight window', { timeout: scaled(900000) }, async () => {
  const nodes = cluster.nodes
  const hostsFrom = (first: number): { host: string; port: number }[] => [0, 1, 2].map((k) => nodes[(first + k) % 3]!).map((n) => ({ host: '127.0.0.1', port: n.port }))
  const upstream = (first: number, declare: boolean): Record<string, unknown> => ({
    name: 'cloud', type: 'amqp', hosts: hostsFrom(first), username: 'guest', password: 'guest',
    address: '/amq/queue/tele', queue: { type: 'quorum', declare }, maxInflight: MAX_INFLIGHT,
    reconnectMinMs: 200, reconnectMaxMs: 1000, connectTimeoutMs: 5000,
  })
  // gw-a declares the quorum queue; gw-b requires it (an operator's queue): both modes run.
  const gwA = await startGatewayProc({ gateway: { id: 'gw-a' }, mqtt: { openBroker: true }, upstreams: [upstream(0, true)] })
  cleanups.push(() => gwA.cleanup())
  await gwA.waitLog((l) => l.msg === 'upstream connected', 30000)
  assert.ok(gwA.logs.some((l) => l.msg === 'declared the quorum queue' && l.queue === 'tele'))
  const gwB = await startGatewayProc({ gateway: { id: 'gw-b' }, mqtt: { openBroker: true }, upstreams: [upstream(1, false)] })
  cleanups.push(() => gwB.cleanup())
  await gwB.waitLog((l) => l.msg === 'upstream connected', 30000)
  const gws: [string, GatewayProc][] = [['gw-a', gwA], ['gw-b', gwB]]

  const sims: DeviceSim[] = []
  for (const [name, g] of gws) {
    for (const d of ['d1', 'd2']) sims.push(simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, `${name.slice(3)}${d}`, { window: 2, intervalMs: 10 }))
  }
  const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, scaled(ms)))
  await pause(3000)
  assert.ok(sims.every((s) => s.acked.size > 0 && !s.closed), 'load is flowing')

  const endpointOf = async (g: GatewayProc): Promise<string> => {
    const h = await g.health() as unknown as { upstreams: { connected: boolean; endpoint?: string }[] }
    return h.upstreams[0]!.connected ? h.upstreams[0]!.endpoint ?? '' : ''
  }
  const failovers: Failover[] = []
  for (const [name, g] of gws) {
    const ep = await waitFor(`${name} connected`, () => endpointOf(g).then((e) => e || false), 30000)
    const node = cluster.node(Number(ep.split(':')[1]))!
    assert.ok(node, `${name} is on a cluster node (${ep})`)
    // Every gateway on that node fails over, not only this one.
    const affected: [string, GatewayProc][] = []
    for (const x of gws) if ((await endpointOf(x[1])) === ep) affected.push(x)
    const marks = new Map(affected.map(([n, x]) => [n, x.logs.length]))
    const tStop = Date.now()
    await node.stop()
    for (const [n, x] of affected) {
      const from = marks.get(n)!
      const up = await waitFor(`${n} reconnected after ${node.nodeName} stopped`, () => x.logs.slice(from).find((l) => l.msg === 'upstream connected'), 60000) as LogLine & { time: number; endpoint: string }
      const down = x.logs.slice(from).find((l) => l.msg === 'upstream link down: readings stay in the outbox') as (LogLine & { time: number }) | undefined
      assert.notEqual(up.endpoint, ep, `${n} moved to another node`)
      failovers.push({ gateway: n, stoppedNode: node.index, toEndpoint: up.endpoint, stopToConnectedMs: up.time - tStop, downToConnectedMs: down ? up.time - down.time : NaN })
    }
    await pause(3000)
    assert.ok(sims.every((s) => !s.closed), 'devices stay connected through the failover')
    await node.start()
    await pause(3000)
  }

  const ackedBefore = sims.reduce((n, s) => n + s.acked.size, 0)
  await Promise.all(sims.map((s) => s.stop()))
  // Everything acked to the devices is in the outboxes; wait until both have sent it all.
  for (const [name, g] of gws) {
    await waitFor(`${name} drained its outbox`, async () => (await g.health()).upstreams[0]!.lag === 0, 120000, 200)
  }
  const consumer = await amqpConsumer(nodes[2]!.port, '/amq/queue/tele')
  cleanups.push(() => consumer.close())
  const acked = sims.reduce((n, s) => n + s.acked.size, 0)
  assert.ok(acked >= ackedBefore)
  let last = -1
  await waitFor('the quorum queue consumed to the end', () => {
    const n = consumer.got.length
    const stable = n === last && n >= acked
    last = n
    return stable
  }, 120000, 1000)
  const r = audit(sims, consumer.got)
  const failoversPerGw = new Map<string, number>()
  for (const f of failovers) failoversPerGw.set(f.gateway, (failoversPerGw.get(f.gateway) ?? 0) + 1)
  const dupBound = [...failoversPerGw.values()].reduce((a, b) => a + b, 0) * MAX_INFLIGHT
  console.log(JSON.stringify({ readingsAcked: acked, consumed: consumer.got.length, duplicates: r.duplicates, duplicateBound: dupBound, failovers }, null, 1))
  assert.deepEqual(r.missing.slice(0, 20), [], `${r.missing.length} acked readings missing from the quorum queue`)
  assert.deepEqual(r.outOfOrder.slice(0, 20), [], 'per-device order')
  assert.ok(r.duplicates <= dupBound, `${r.duplicates} duplicates > ${dupBound} (failovers x maxInflight)`)
  assert.ok(failovers.length >= 2, 'each gateway failed over at least once')
  for (const [name] of gws) assert.ok(failoversPerGw.get(name), `${name} failed over`)
  // Message ids carry the gateway: the two gateways' readings never collide.
  assert.ok(consumer.got.every((m) => /^gw-[ab]:/.test(m.id)), 'message ids carry the gateway')
})
