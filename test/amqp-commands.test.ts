// Command downlink over AMQP 1.0 against a real RabbitMQ: consumer -> command queue -> gateway -> MQTT device -> result
// -> reply_to with correlation_id. Routing failures (unknown device, expired, device error) get error replies.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import rhea, { type Message } from 'rhea'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { connectAmqp, amqpConsumer, amqpSender, bodyJson } from './helpers/amqp.ts'
import { simulateDevice } from './helpers/load.ts'
import { deliveryReport, formatReport } from './helpers/report.ts'
import { waitFor } from './helpers/net.ts'
import { endClient } from './helpers/mqtt.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

let rmq: RabbitMq
let g: GatewayProc
before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
  g = await startGatewayProc({
    mqtt: { openBroker: true },
    upstreams: [{ name: 'cloud', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'guest', password: 'guest', address: '/queue/tele', commandAddress: '/queue/cmd.{gateway}', statusAddress: '/queue/status.{gateway}', heartbeatSeconds: 1, reconnectMinMs: 100, reconnectMaxMs: 500 }],
  })
  cleanups.push(() => g.cleanup())
  await g.waitLog((l) => l.msg === 'upstream connected', 10000)
})

test('commands reach the MQTT device and its result comes back to reply_to with the correlation id; failures get error replies', async () => {
  // The simulated device: answers `fail` with an error, everything else with an echo of the arguments.
  const dev = mqtt.connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'dev1', reconnectPeriod: 0 })
  cleanups.push(() => endClient(dev))
  await new Promise<void>((resolve) => dev.once('connect', () => resolve()))
  const seenByDevice: string[] = []
  dev.on('message', (topic, payload) => {
    const name = topic.split('/')[3]!
    const cmd = JSON.parse(payload.toString()) as { id: string; args: unknown }
    seenByDevice.push(`${name}:${cmd.id}`)
    dev.publish(`${topic}/result`, JSON.stringify(name === 'fail' ? { id: cmd.id, error: 'relay stuck' } : { id: cmd.id, result: { echo: cmd.args } }), { qos: 1 })
  })
  await dev.subscribeAsync('devices/dev1/cmd/+', { qos: 1 })

  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const replies: Message[] = []
  const rcv = conn.open_receiver({ source: { address: '/queue/replies', durable: 1 }, autoaccept: true })
  rcv.on('message', (ctx) => { replies.push(ctx.message!) })
  await new Promise<void>((resolve) => rcv.once('receiver_open', () => resolve()))
  await waitFor('gateway command link attached', async () => /1/.test((await rmq.ctl(['list_queues', 'name', 'consumers'])).out.split('\n').find((l) => l.startsWith('cmd.test-gw')) ?? ''), 10000)
  const s = await amqpSender(conn, '/queue/cmd.test-gw')
  const send = (m: Message): void => { void s.send({ reply_to: '/queue/replies', ...m }) }
  const body = (o: unknown): Message['body'] => rhea.message.data_section(Buffer.from(JSON.stringify(o)))
  send({ message_id: 'c1', subject: 'dev1/ping', body: body({ x: 1 }) })
  send({ message_id: 'c2', subject: 'ghost/ping', body: body({}) })
  send({ message_id: 'c3', subject: 'dev1/ping', body: body({}), absolute_expiry_time: new Date(Date.now() - 1000) })
  send({ message_id: 'c4', subject: 'dev1/fail', body: body({}) })
  send({ message_id: 'c5', application_properties: { device: 'dev1', command: 'set' }, body: body({ on: true }) })
  send({ message_id: 'c6', subject: 'noslash', body: body({}) })
  await waitFor('six replies', () => replies.length >= 6, 10000).catch(() => { throw new Error(`replies: ${JSON.stringify(replies.map((r) => [r.correlation_id, bodyJson(r)]))}; logs ${JSON.stringify(g.logs.slice(-10))}`) })
  const by = new Map(replies.map((r) => [String(r.correlation_id), r]))
  const c1 = by.get('c1')!
  assert.deepEqual(bodyJson(c1), { ok: true, result: { echo: { x: 1 } } })
  assert.equal(c1.subject, 'dev1/ping')
  assert.equal(c1.content_type, 'application/json')
  assert.deepEqual(c1.application_properties, { gateway: 'test-gw', device: 'dev1', command: 'ping', ok: true })
  assert.deepEqual(bodyJson(by.get('c2')!), { ok: false, code: 'unknown_device', error: 'unknown device "ghost"' })
  assert.equal((bodyJson(by.get('c3')!) as { code: string }).code, 'expired')
  assert.deepEqual(bodyJson(by.get('c4')!), { ok: false, code: 'device_error', error: 'relay stuck' })
  assert.deepEqual(bodyJson(by.get('c5')!), { ok: true, result: { echo: { on: true } } })
  assert.equal((bodyJson(by.get('c6')!) as { code: string }).code, 'bad_request')
  assert.deepEqual(seenByDevice.sort(), ['fail:c4', 'ping:c1', 'set:c5'], 'expired and unknown commands never reach a device')
})

test('a reply_to naming a non-durable queue gets its reply and a refused one is only logged: the telemetry link never bounces', async (t) => {
  const dev = mqtt.connect(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'dev2', reconnectPeriod: 0 })
  cleanups.push(() => endClient(dev))
  await new Promise<void>((resolve) => dev.once('connect', () => resolve()))
  dev.on('message', (topic, payload) => {
    const cmd = JSON.parse(payload.toString()) as { id: string; args: unknown }
    dev.publish(`${topic}/result`, JSON.stringify({ id: cmd.id, result: { echo: cmd.args } }), { qos: 1 })
  })
  await dev.subscribeAsync('devices/dev2/cmd/+', { qos: 1 })
  const consumer = await amqpConsumer(rmq.port, '/queue/tele')
  // The verify test below consumes /queue/tele too: a second consumer would take every other reading from it.
  t.after(() => consumer.close())
  // The reply queue as a Qpid-Proton-like requester declares it: non-durable.
  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const replies: Message[] = []
  const rcv = conn.open_receiver({ source: { address: '/queue/replies-nd', durable: 0 }, autoaccept: true })
  rcv.on('message', (ctx) => { replies.push(ctx.message!) })
  await new Promise<void>((resolve) => rcv.once('receiver_open', () => resolve()))
  assert.match((await rmq.ctl(['list_queues', 'name', 'durable'])).out, /^replies-nd\tfalse$/m)
  const upstreamSince = async (): Promise<string> => ((await g.health()) as unknown as { upstreams: { since: string }[] }).upstreams[0]!.since
  const since = await upstreamSince()
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 'tele1', { window: 1, intervalMs: 5, max: 300 })
  await waitFor('telemetry flowing', () => consumer.got.length >= 20, 10000)

  const s = await amqpSender(conn, '/queue/cmd.test-gw')
  const send = (id: string, replyTo: string): void => { void s.send({ message_id: id, reply_to: replyTo, subject: 'dev2/ping', body: rhea.message.data_section(Buffer.from(JSON.stringify({ n: id }))) }) }
  send('n1', '/queue/replies-nd')
  send('x1', '/exchange/nope/x')
  send('n2', '/queue/replies-nd')
  await waitFor('both replies on the non-durable queue', () => replies.length >= 2, 10000)
    .catch(() => { throw new Error(`replies ${replies.length}; logs ${JSON.stringify(g.logs.filter((l) => l.level >= 40))}`) })
  await waitFor('the refused reply logged', () => g.logs.some((l) => l.msg === 'command reply could not be delivered' && l.replyTo === '/exchange/nope/x'), 10000)
  assert.deepEqual(replies.map((m) => [m.correlation_id, bodyJson(m)]), [['n1', { ok: true, result: { echo: { n: 'n1' } } }], ['n2', { ok: true, result: { echo: { n: 'n2' } } }]])

  await waitFor('all readings acked', () => sim.acked.size === 300, 20000)
  await waitFor('all readings delivered', () => deliveryReport([sim], consumer.got).lost === 0, 10000).catch(() => undefined)
  const report = deliveryReport([sim], consumer.got)
  assert.equal(report.lost, 0, formatReport(report))
  assert.equal(await upstreamSince(), since, 'the upstream link never went down')
  assert.deepEqual(g.logs.filter((l) => l.msg === 'upstream link down: readings stay in the outbox'), [])
  assert.equal(g.logs.filter((l) => l.msg === 'upstream connected').length, 1)
  await sim.stop()
})

test('heartbeat: a status message per interval with backlog, devices online and version', async () => {
  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const got: Message[] = []
  const rcv = conn.open_receiver({ source: { address: '/queue/status.test-gw', durable: 1 }, autoaccept: true })
  rcv.on('message', (ctx) => { got.push(ctx.message!) })
  const t0 = Date.now()
  // The status address also carries presence and alert messages (the lifecycle): the heartbeats are those with
  // subject "status".
  const heartbeats = (): Message[] => got.filter((m) => m.subject === 'status' && (m.creation_time as Date).getTime() >= t0 - 50)
  await waitFor('two heartbeats after subscribing', () => heartbeats().length >= 2, 5000)
  const m = heartbeats().at(-1)!
  assert.equal(m.subject, 'status')
  assert.deepEqual(m.application_properties, { gateway: 'test-gw', kind: 'status', schema: 1 })
  assert.equal(m.ttl, 3000)
  const b = bodyJson(m) as { gateway: string; version: string; devicesOnline: number; backlog: { depth: number }; upstreams: { name: string; connected: boolean }[] }
  assert.equal(b.gateway, 'test-gw')
  assert.match(b.version, /^\d+\.\d+\.\d+/)
  assert.equal(typeof b.devicesOnline, 'number')
  assert.equal(typeof b.backlog.depth, 'number')
  assert.deepEqual(b.upstreams.map((u) => [u.name, u.connected]), [['cloud', true]])
})

test('npm run verify: delivery report against a running gateway and broker', async () => {
  const { spawn } = await import('node:child_process')
  const { ROOT } = await import('./helpers/gateway.ts')
  const p = spawn(process.execPath, ['--import', 'tsx', 'scripts/verify.ts', '--mqtt', `mqtt://127.0.0.1:${g.mqttPort}`, '--amqp', `amqp://guest:guest@127.0.0.1:${rmq.port}`,
    '--address', '/queue/tele', '--vhost', '/', '--devices', '3', '--count', '200', '--wait', '30'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  p.stdout.on('data', (d: Buffer) => { out += d.toString() })
  p.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise<number | null>((resolve) => p.on('exit', resolve))
  assert.equal(code, 0, out)
  assert.match(out, /^sent 600 \/ acked 600 \/ delivered 600 \/ duplicated 0 \/ lost 0 \/ out-of-order 0$/m)
})
