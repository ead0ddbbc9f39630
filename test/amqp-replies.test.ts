// Command replies against a real RabbitMQ 3.10, with the amqp upstream in this process: a reply_to naming a
// non-durable queue (as Qpid Proton declares it), a durable one, or something the broker refuses (even an address
// that crashes RabbitMQ's AMQP 1.0 connection) must never end the link telemetry and commands use. A reply that
// cannot be delivered is counted in the upstream's status and warned about once, not per command.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import rhea, { type Message } from 'rhea'
import { AmqpUpstream } from '../bridges/amqp/upstream.ts'
import { amqpUpstream } from '../bridges/amqp/config.ts'
import { FailureLog, retryWithOtherDurability } from '../bridges/amqp/replies.ts'
import type { ClaimedRow } from '../gateway/outbox/types.ts'
import type { Outcome } from '../gateway/upstream/types.ts'
import type { Command, CommandResult } from '../gateway/commands/router.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { amqpConsumer, amqpSender, bodyJson, connectAmqp } from './helpers/amqp.ts'
import { scaled, waitFor } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

let rmq: RabbitMq
before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
})

interface LogLine { level: number; msg: string; [k: string]: unknown }

interface Running {
  up: AmqpUpstream
  logs: LogLine[]
  commands: Command[]
  connects(): number
}

/** The upstream as the gateway runs it, with a command handler that answers every command with an echo. */
async function upstream(n: string): Promise<Running> {
  const logs: LogLine[] = []
  const log = pino({ level: 'debug' }, { write: (s: string) => { logs.push(JSON.parse(s) as LogLine) } })
  const cfg = amqpUpstream.parse({
    name: 'cloud', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'guest', password: 'guest',
    address: `/queue/tele-${n}`, commandAddress: `/queue/cmd-${n}`, reconnectMinMs: 100, reconnectMaxMs: 500,
  })
  const up = new AmqpUpstream(cfg, 'gw', log)
  const commands: Command[] = []
  up.onCommand(async (cmd): Promise<CommandResult> => { commands.push(cmd); return { id: cmd.id, device: cmd.device, name: cmd.name, ok: true, result: { echo: cmd.args } } })
  await up.start()
  cleanups.push(() => up.close())
  await waitFor('upstream connected', () => up.status().connected, 10000)
  await waitFor('command link attached', async () => /\t1$/m.test((await rmq.ctl(['list_queues', 'name', 'consumers'])).out.split('\n').find((l) => l.startsWith(`cmd-${n}\t`)) ?? ''), 10000)
  return { up, logs, commands, connects: () => logs.filter((l) => l.msg === 'upstream connected').length }
}

/** A steady stream of readings (one every 5 ms while the upstream gives credit), as the forwarder would hand them. */
function telemetry(up: AmqpUpstream, device: string): { handed: string[]; outcomes: Map<string, Outcome[]>; stop(): void } {
  const handed: string[] = []
  const outcomes = new Map<string, Outcome[]>()
  let seq = 0
  const timer = setInterval(() => {
    if (up.credit() <= 0) return
    seq++
    const now = Date.now()
    const row: ClaimedRow = { rowId: seq, device, seq, deviceSeq: seq, msgId: `gw:${device}:${seq}`, ts: now, receivedAt: now, kind: 'json', payload: JSON.stringify({ v: seq }), link: 'mqtt', priority: false }
    handed.push(row.msgId)
    up.deliver([row], (_rowId, outcome) => { const o = outcomes.get(row.msgId) ?? []; o.push(outcome); outcomes.set(row.msgId, o) })
  }, 5)
  cleanups.push(() => clearInterval(timer))
  return { handed, outcomes, stop: () => clearInterval(timer) }
}

/** Every reading handed to the upstream was accepted once and reached the consumer. */
async function assertAllDelivered(stream: ReturnType<typeof telemetry>, got: { id: string }[]): Promise<void> {
  await waitFor('a steady stream of 300 readings', () => stream.handed.length >= 300, 10000).catch(() => undefined)
  stream.stop()
  await waitFor('every reading settled', () => stream.outcomes.size === stream.handed.length, 10000).catch(() => undefined)
  const ids = new Set(got.map((g) => g.id))
  await waitFor('every reading consumed', () => { for (const g of got) ids.add(g.id); return stream.handed.every((id) => ids.has(id)) }, 10000).catch(() => undefined)
  assert.ok(stream.handed.length >= 300, `a steady stream ran (${stream.handed.length} readings)`)
  const unsettled = stream.handed.filter((id) => !stream.outcomes.has(id))
  assert.deepEqual(unsettled.slice(0, 5), [], `${unsettled.length} of ${stream.handed.length} readings never settled (link dropped under them)`)
  const notAccepted = [...stream.outcomes].filter(([, o]) => o.join() !== 'accepted')
  assert.deepEqual(notAccepted.slice(0, 5), [], 'every reading accepted exactly once')
  const missing = stream.handed.filter((id) => !ids.has(id))
  assert.deepEqual(missing.slice(0, 5), [], `${missing.length} readings never reached the consumer`)
}

/** A reply queue as a Qpid-Proton-like requester declares it: `/queue/<name>` with a non-durable source. */
async function replyQueue(name: string, durable: boolean): Promise<Message[]> {
  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const got: Message[] = []
  const rcv = conn.open_receiver({ source: { address: `/queue/${name}`, durable: durable ? 1 : 0 }, autoaccept: true })
  rcv.on('message', (ctx) => { got.push(ctx.message!) })
  await new Promise<void>((resolve) => rcv.once('receiver_open', () => resolve()))
  const line = (await rmq.ctl(['list_queues', 'name', 'durable'])).out.split('\n').find((l) => l.startsWith(`${name}\t`))
  assert.equal(line, `${name}\t${durable}`, 'the reply queue exists with the intended durability')
  return got
}

const body = (o: unknown): Message['body'] => rhea.message.data_section(Buffer.from(JSON.stringify(o)))

test('reply policy: only a precondition-failed attach is retried, once; warnings are rate limited per address and overall', () => {
  assert.equal(retryWithOtherDurability('amqp:precondition-failed', false, false), true)
  assert.equal(retryWithOtherDurability('amqp:precondition-failed', false, true), false, 'once')
  assert.equal(retryWithOtherDurability('amqp:precondition-failed', true, false), false, 'not after the link opened')
  for (const c of ['amqp:not-found', 'amqp:invalid-field', 'amqp:unauthorized-access', undefined]) assert.equal(retryWithOtherDurability(c, false, false), false)
  const f = new FailureLog(1000, 3)
  assert.equal(f.take('a', 0), 0)
  assert.equal(f.take('a', 10), null, 'same address within the window')
  assert.equal(f.take('b', 20), 1, 'another address: logged, with the one suppressed before')
  assert.equal(f.take('c', 30), 0)
  assert.equal(f.take('d', 40), null, 'at most three per window overall')
  assert.equal(f.take('a', 1010), 1, 'next window: logged again, with the count suppressed since the last warning')
})

test('a reply_to naming a non-durable queue gets its reply; durable ones too; telemetry keeps flowing on the same connection', async () => {
  const consumer = await amqpConsumer(rmq.port, '/queue/tele-nd')
  cleanups.push(() => consumer.close())
  const nd = await replyQueue('replies-nd', false)
  const dur = await replyQueue('replies-dur', true)
  const r = await upstream('nd')
  const stream = telemetry(r.up, 'dev1')
  await waitFor('telemetry flowing', () => consumer.got.length >= 20, 10000)
  const since = r.up.status().since

  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const s = await amqpSender(conn, '/queue/cmd-nd')
  const send = (id: string, replyTo: string): void => { void s.send({ message_id: id, reply_to: replyTo, subject: 'dev1/ping', body: body({ n: id }) }) }
  send('c1', '/queue/replies-nd')
  send('c2', '/queue/replies-dur')
  send('c3', '/queue/replies-nd')
  await waitFor('replies to both queues', () => nd.length >= 2 && dur.length >= 1, 10000)
    .catch(() => { throw new Error(`replies nd ${nd.length} dur ${dur.length}; status ${JSON.stringify(r.up.status())}; logs ${JSON.stringify(r.logs.filter((l) => l.level >= 40))}`) })
  send('c4', '/queue/replies-dur')
  await waitFor('second durable reply', () => dur.length >= 2, 10000)
  await new Promise((res) => setTimeout(res, scaled(300)))

  assert.deepEqual(nd.map((m) => [m.correlation_id, bodyJson(m)]), [['c1', { ok: true, result: { echo: { n: 'c1' } } }], ['c3', { ok: true, result: { echo: { n: 'c3' } } }]])
  assert.deepEqual(dur.map((m) => m.correlation_id), ['c2', 'c4'])
  assert.equal(nd[0]!.subject, 'dev1/ping')
  await assertAllDelivered(stream, consumer.got)
  const st = r.up.status()
  assert.equal(st.connected, true)
  assert.equal(st.since, since, 'the telemetry link never went down')
  assert.equal(r.connects(), 1, 'one connection for telemetry and commands all along')
  assert.deepEqual(r.logs.filter((l) => l.level >= 40).map((l) => l.msg), [], 'no warnings')
  assert.equal(st.repliesSent, 4)
  assert.equal(st.repliesFailed, 0)
})

test('a reply_to the broker refuses (or that crashes its connection) fails alone: counted, warned about once, nothing else lost', async () => {
  const consumer = await amqpConsumer(rmq.port, '/queue/tele-bad')
  cleanups.push(() => consumer.close())
  const nd = await replyQueue('replies-after', false)
  const r = await upstream('bad')
  const stream = telemetry(r.up, 'dev2')
  await waitFor('telemetry flowing', () => consumer.got.length >= 20, 10000)
  const since = r.up.status().since

  const conn = await connectAmqp(rmq.port)
  cleanups.push(() => conn.close())
  const s = await amqpSender(conn, '/queue/cmd-bad')
  const send = (id: string, replyTo: string): void => { void s.send({ message_id: id, reply_to: replyTo, subject: 'dev2/ping', body: body({}) }) }
  // not-found (three times: warned about once), invalid-field, unauthorized-access (reserved name), and an address
  // RabbitMQ 3.10's AMQP 1.0 plugin crashes on, resetting the whole connection about 3 s after the attach.
  const bad = ['/exchange/nope/x', '/exchange/nope/x', '/exchange/nope/x', '/foo/bar', '/queue/a/b', '/queue/amq.reserved', '/temp-queue/x']
  bad.forEach((to, i) => send(`b${i}`, to))
  await waitFor('every bad reply counted', () => r.up.status().repliesFailed === bad.length, 15000)
    .catch(() => { throw new Error(`status ${JSON.stringify(r.up.status())}; logs ${JSON.stringify(r.logs.filter((l) => l.level >= 40))}`) })
  // The next requester is not affected.
  send('ok1', '/queue/replies-after')
  await waitFor('reply after the bad ones', () => nd.length >= 1, 10000)
  await new Promise((res) => setTimeout(res, scaled(300)))

  assert.equal(nd[0]!.correlation_id, 'ok1')
  assert.deepEqual(r.commands.map((c) => c.id), [...bad.map((_, i) => `b${i}`), 'ok1'], 'every command reached the device')
  await assertAllDelivered(stream, consumer.got)
  const st = r.up.status()
  assert.equal(st.connected, true)
  assert.equal(st.since, since, 'the telemetry link never went down')
  assert.equal(r.connects(), 1, 'one connection for telemetry and commands all along')
  assert.equal(r.logs.filter((l) => l.msg === 'upstream link down: readings stay in the outbox').length, 0)
  assert.equal(st.repliesFailed, bad.length)
  assert.equal(st.repliesSent, 1)
  const warned = r.logs.filter((l) => l.msg === 'command reply could not be delivered')
  assert.equal(warned.filter((l) => l.replyTo === '/exchange/nope/x').length, 1, 'a repeated bad reply_to is warned about once')
  assert.ok(warned.length >= 3 && warned.length <= 5, `${warned.length} warnings for ${bad.length} failures`)
  assert.match(String(warned[0]!.err), /amqp:not-found/)
  assert.ok(warned.every((l) => typeof l.id === 'string' && typeof l.repliesFailed === 'number'))
})
