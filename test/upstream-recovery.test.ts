// Recovery after a short upstream outage (operators issue, item 8): a real gateway with an amqp upstream to a private
// RabbitMQ and an mqtt upstream to a private Mosquitto, a device publishing throughout, default reconnect settings.
// 1. Both peers are stopped for 10 s and started again on the same ports and data dirs: each upstream must be
//    connected again within 2 s (scaled) of its peer being ready (RabbitMQ: "Server startup complete"; Mosquitto: its
//    port accepts), and every acknowledged reading must arrive at both.
// 2. A connection attempt that hangs (TCP accepted, never an AMQP open / CONNACK) is abandoned well before the 10 s
//    connect timeout, so it does not add to the stall once the peer answers again.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, connect, type Socket } from 'node:net'
import { startGatewayProc, type GatewayProc, type LogLine } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.ts'
import { amqpConsumer } from './helpers/amqp.ts'
import { simulateDevice, upstreamCollector, audit, type DeviceSim, type Received } from './helpers/load.ts'
import { end } from './helpers/mqtt.ts'
import { freePort, scaled, waitFor } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

const OUTAGE_MS = 10_000
const RECONNECT_BUDGET_MS = scaled(2000)

let rmq: RabbitMq
let mosq: Mosquitto
let collector: Awaited<ReturnType<typeof upstreamCollector>>
before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
  // Persistent and stopped with SIGTERM: the collector's session (and what is queued for it) survives an outage.
  mosq = await startMosquitto(undefined, { persistence: true })
  cleanups.push(() => mosq.stop())
  collector = await upstreamCollector(`mqtt://127.0.0.1:${mosq.port}`, `collector-${mosq.port}`)
  cleanups.push(() => end(collector.client))
})

/** A gateway with the default reconnectMinMs / reconnectMaxMs / connectTimeoutMs: what operators run with. */
async function gateway(amqpPort: number, mqttPort: number, queue: string): Promise<{ g: GatewayProc; amqpUp: (l: LogLine) => boolean; mqttUp: (l: LogLine) => boolean }> {
  const g = await startGatewayProc({
    mqtt: { openBroker: true },
    log: { level: 'debug' },
    upstreams: [
      { name: 'cloud', type: 'amqp', host: '127.0.0.1', port: amqpPort, username: 'guest', password: 'guest', address: queue },
      { name: 'ref', type: 'mqtt', url: `mqtt://127.0.0.1:${mqttPort}` },
    ],
  })
  cleanups.push(() => g.cleanup())
  const amqpUrl = `amqp://127.0.0.1:${amqpPort}`
  const amqpUp = (l: LogLine): boolean => l.msg === 'upstream connected' && l.url === amqpUrl
  const mqttUp = (l: LogLine): boolean => l.msg === 'upstream connected' && l.upstream === 'ref'
  await g.waitLog(amqpUp, 15000)
  await g.waitLog(mqttUp, 15000)
  return { g, amqpUp, mqttUp }
}

/** Log lines at or after index `mark` matching `pred`. */
function since(g: GatewayProc, mark: number, pred: (l: LogLine) => boolean): (l: LogLine) => boolean {
  return (l) => g.logs.indexOf(l) >= mark && pred(l)
}

/** What the upstreams logged, times relative to `t0` (for failure messages). */
function story(g: GatewayProc, t0: number): string {
  return g.logs.filter((l) => /upstream/.test(l.msg)).slice(-40)
    .map((l) => JSON.stringify({ t: Number(l.time) - t0, msg: l.msg, upstream: l.upstream, err: l.err, retryInMs: l.retryInMs, outageMs: l.outageMs })).join('\n')
}

async function allArrived(sim: DeviceSim, viaAmqp: () => Received[], viaMqtt: () => Received[]): Promise<void> {
  await waitFor('every acked reading at both upstreams', () => audit([sim], viaAmqp()).missing.length === 0 && audit([sim], viaMqtt()).missing.length === 0, 60000, 200).catch(() => undefined)
  const a = audit([sim], viaAmqp())
  const m = audit([sim], viaMqtt())
  assert.deepEqual(a.missing.slice(0, 20), [], `amqp: missing ${a.missing.length} of ${sim.acked.size}`)
  assert.deepEqual(m.missing.slice(0, 20), [], `mqtt: missing ${m.missing.length} of ${sim.acked.size}`)
  assert.deepEqual(a.outOfOrder, [])
  assert.deepEqual(m.outOfOrder, [])
}

test('after a 10 s RabbitMQ and Mosquitto outage both upstreams reconnect within 2 s of the peer being back, nothing acked is lost', async () => {
  const queue = '/queue/recovery'
  // A consumer before the outage and a new one after it (the durable queue keeps what arrives meanwhile): a consumer
  // retrying during RabbitMQ's boot can hang on a connection the booting node closes without 'disconnected'.
  const consumers = [await amqpConsumer(rmq.port, queue)]
  cleanups.push(() => Promise.all(consumers.map((c) => c.close())).then(() => undefined))
  const got = (): Received[] => consumers.flatMap((c) => c.got)
  const { g, amqpUp, mqttUp } = await gateway(rmq.port, mosq.port, queue)
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 'r1', { window: 1, intervalMs: 10 })
  cleanups.push(() => sim.stop())
  await waitFor('forwarding to both upstreams', () => got().length > 50 && collector.got.filter((r) => r.device === 'r1').length > 50, 15000)

  await Promise.all([rmq.stop('SIGTERM'), mosq.stop('SIGTERM')])
  await waitFor('both upstreams seen down', async () => {
    const h = await g.health()
    return h.upstreams.length === 2 && h.upstreams.every((u) => !u.connected)
  }, 15000)
  const ackedBefore = sim.acked.size
  await new Promise((r) => setTimeout(r, OUTAGE_MS))
  assert.ok(sim.acked.size > ackedBefore + 100, `the device is still acknowledged during the outage (${ackedBefore} -> ${sim.acked.size})`)

  const mark = g.logs.length
  const [mqttReadyAt, amqpReadyAt] = await Promise.all([
    mosq.start().then(() => Date.now()),
    rmq.start().then(() => Date.now()),
  ])
  // Generous timeouts so a slow reconnect is measured and reported rather than only timed out.
  const [amqpLine, mqttLine] = await Promise.all([g.waitLog(since(g, mark, amqpUp), 120000), g.waitLog(since(g, mark, mqttUp), 120000)])
  const amqpMs = Number(amqpLine.time) - amqpReadyAt
  const mqttMs = Number(mqttLine.time) - mqttReadyAt
  console.log(`peer restart: reconnected after the peer was ready: amqp ${amqpMs} ms, mqtt ${mqttMs} ms (budget ${RECONNECT_BUDGET_MS} ms)`)
  const why = (): string => `; Mosquitto was ready at ${mqttReadyAt - amqpReadyAt} ms; log, times relative to RabbitMQ ready:\n${story(g, amqpReadyAt)}`
  const h = await g.health()
  assert.deepEqual(h.upstreams.map((u) => [u.name, u.connected]).sort(), [['cloud', true], ['ref', true]])
  assert.ok(amqpMs <= RECONNECT_BUDGET_MS, `amqp upstream reconnected ${amqpMs} ms after RabbitMQ was ready (budget ${RECONNECT_BUDGET_MS} ms)${why()}`)
  assert.ok(mqttMs <= RECONNECT_BUDGET_MS, `mqtt upstream reconnected ${mqttMs} ms after Mosquitto was ready (budget ${RECONNECT_BUDGET_MS} ms)${why()}`)

  consumers.push(await amqpConsumer(rmq.port, queue))
  await sim.stop()
  assert.ok(sim.acked.size > 500, `enough load: ${sim.acked.size}`)
  await allArrived(sim, got, () => collector.got)
})

/**
 * A TCP proxy in front of a peer. `blackhole()` drops the forwarded connections (the link goes down) and from then on
 * accepts new ones and never answers (a frozen broker, or a proxy whose backend is gone); `forward()` forwards new
 * connections again while the held ones stay open and silent (no FIN, no RST): only the gateway's timeout ends them.
 */
interface Proxy { port: number; held: Socket[]; drop(): void; blackhole(): void; forward(): void; close(): void }

async function tcpProxy(target: number): Promise<Proxy> {
  const port = await freePort()
  const live = new Set<Socket>()
  let mode: 'forward' | 'blackhole' = 'forward'
  const server = createServer((s) => {
    s.on('error', () => undefined)
    if (mode === 'blackhole') { p.held.push(s); return }
    const up = connect(target, '127.0.0.1')
    up.on('error', () => undefined)
    live.add(s); live.add(up)
    s.pipe(up); up.pipe(s)
    const gone = (): void => { s.destroy(); up.destroy(); live.delete(s); live.delete(up) }
    s.on('close', gone); up.on('close', gone)
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  const dropAll = (): void => { for (const s of [...live]) s.destroy() }
  const p: Proxy = {
    port, held: [],
    drop: dropAll,
    blackhole() { mode = 'blackhole'; dropAll() },
    forward() { mode = 'forward' },
    close() { server.close(); dropAll(); for (const s of p.held) s.destroy() },
  }
  return p
}

test('a connection attempt that hangs (TCP accepted, no AMQP open / CONNACK) is abandoned quickly: reconnect within 5 s of the peer answering', async () => {
  const queue = '/queue/recovery-hang'
  const consumer = await amqpConsumer(rmq.port, queue)
  cleanups.push(() => consumer.close())
  const [amqpProxy, mqttProxy] = [await tcpProxy(rmq.port), await tcpProxy(mosq.port)]
  cleanups.push(() => { amqpProxy.close(); mqttProxy.close() })
  const { g, amqpUp, mqttUp } = await gateway(amqpProxy.port, mqttProxy.port, queue)
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 'h1', { window: 1, intervalMs: 10 })
  cleanups.push(() => sim.stop())
  await waitFor('forwarding to both upstreams', () => consumer.got.length > 20 && collector.got.some((r) => r.device === 'h1'), 15000)
  // One short drop first: the gateway learns how long a (warm) setup to each peer takes, as it would in service.
  let mark = g.logs.length
  amqpProxy.drop(); mqttProxy.drop()
  await Promise.all([g.waitLog(since(g, mark, amqpUp), 10000), g.waitLog(since(g, mark, mqttUp), 10000)])

  mark = g.logs.length
  amqpProxy.blackhole(); mqttProxy.blackhole()
  // Each proxy forwards again as soon as the gateway's first attempt is hanging on it: that attempt stays hung.
  const [amqpBackAt, mqttBackAt] = await Promise.all([amqpProxy, mqttProxy].map(async (p) => {
    await waitFor('a connection attempt hanging on the proxy', () => p.held.length > 0, 10000, 5)
    p.forward()
    return Date.now()
  }))
  const [amqpLine, mqttLine] = await Promise.all([g.waitLog(since(g, mark, amqpUp), 60000), g.waitLog(since(g, mark, mqttUp), 60000)])
  const amqpMs = Number(amqpLine.time) - amqpBackAt!
  const mqttMs = Number(mqttLine.time) - mqttBackAt!
  const budget = scaled(5000)
  console.log(`hung attempt: reconnected after the peer answered again: amqp ${amqpMs} ms, mqtt ${mqttMs} ms (budget ${budget} ms)`)
  const why = (): string => `; log, times relative to the AMQP proxy forwarding again:\n${story(g, amqpBackAt!)}`
  assert.ok(g.logs.slice(mark).some((l) => /within \d+ ms/.test(String(l.err))), `an attempt was abandoned by its timeout${why()}`)
  assert.ok(amqpMs <= budget, `amqp upstream reconnected ${amqpMs} ms after the broker answered again (budget ${budget} ms)${why()}`)
  assert.ok(mqttMs <= budget, `mqtt upstream reconnected ${mqttMs} ms after the broker answered again (budget ${budget} ms)${why()}`)

  await sim.stop()
  await allArrived(sim, () => consumer.got, () => collector.got)
})
