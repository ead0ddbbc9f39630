// Broker outcomes RabbitMQ 3.10 never sends to a publisher (it has no rejected outcome for publishes): a small AMQP 1.0
// peer on rhea settles with rejected / released / modified, as Artemis, Qpid or Service Bus do.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { startGatewayProc } from './helpers/gateway.ts'
import { fakeBroker, bodyJson } from './helpers/amqp.ts'
import { simulateDevice } from './helpers/load.ts'
import { freePort, waitFor } from './helpers/net.ts'
import { readDeadLetters } from '../gateway/outbox/store.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

test('rejected -> dead-letter table with the broker error condition; released and modified -> retried until accepted', async () => {
  const port = await freePort()
  const attempts = new Map<string, number>()
  let refuse = true
  const broker = await fakeBroker(port, (m) => {
    const id = String(m.message_id)
    const n = (attempts.get(id) ?? 0) + 1
    attempts.set(id, n)
    const v = Number((bodyJson(m).metrics as { v: number }).v)
    if (refuse && v % 10 === 3) return { outcome: 'reject', condition: 'amqp:not-allowed', description: `reading ${v} refused by policy` }
    if (v % 10 === 5 && n === 1) return { outcome: 'release' }
    if (v % 10 === 7 && n === 1) return { outcome: 'modify' }
    return { outcome: 'accept' }
  })
  cleanups.push(() => broker.close())
  const g = await startGatewayProc({
    mqtt: { openBroker: true },
    upstreams: [{ name: 'fake', type: 'amqp', host: '127.0.0.1', port, sasl: 'ANONYMOUS', address: 'telemetry/{gateway}/{device}', reconnectMinMs: 100, reconnectMaxMs: 500 }],
  })
  cleanups.push(() => g.cleanup())
  const sim = simulateDevice(`mqtt://127.0.0.1:${g.mqttPort}`, 'r1', { max: 40 })
  await waitFor('all acked', () => sim.acked.size === 40, 10000)
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 15000)
  const dead = readDeadLetters(join(g.dataDir, 'outbox.db'), 'fake')
  assert.deepEqual(dead.map((d) => d.deviceSeq), [3, 13, 23, 33], JSON.stringify(g.logs.filter((l) => l.level >= 40)))
  assert.equal(dead[0]!.reason, 'rejected by the broker: amqp:not-allowed: reading 3 refused by policy')
  assert.equal(dead[0]!.msgId, `test-gw:r1:${dead[0]!.seq}`)
  // Every other reading was accepted exactly once; the released/modified ones after a second attempt.
  const accepted = broker.received.filter((m) => ![3].includes(Number((bodyJson(m).metrics as { v: number }).v) % 10))
  const ids = new Set(accepted.map((m) => String(m.message_id)))
  assert.equal(ids.size, 36)
  for (const v of [5, 7, 15, 17]) assert.equal(attempts.get(`test-gw:r1:${v + 1}`), 2, `reading ${v} sent twice`)
  assert.equal(broker.received[0]!.to, 'telemetry/test-gw/r1', 'per-device address from the template')
  const h = await g.health() as unknown as { outbox: { deadLettered: number } }
  assert.equal(h.outbox.deadLettered, 4)
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'upstream_rejected' }), 4)

  // The CLI lists them (read-only, gateway running) ...
  const list = await g.cli(['outbox', 'dead', 'list'])
  assert.equal(list.code, 0, list.stderr)
  assert.match(list.stdout, /fake {2}row 4 {2}test-gw:r1:4 {2}rejected by the broker: amqp:not-allowed: reading 3 refused by policy/)
  assert.match(list.stdout, /4 dead-lettered readings/)
  const json = JSON.parse((await g.cli(['outbox', 'dead', 'list', '--json', '--upstream', 'fake'])).stdout) as { msgId: string; payload: string }[]
  assert.equal(json.length, 4)
  assert.equal(JSON.parse(json[0]!.payload).v, 3)
  // ... and retries them while it runs, once the broker's policy changed: same message ids, accepted this time.
  refuse = false
  const before = broker.received.length
  const retry = await g.cli(['outbox', 'dead', 'retry', '--upstream', 'fake'])
  assert.equal(retry.code, 0, retry.stderr)
  assert.match(retry.stdout, /4 dead-lettered readings queued for retry/)
  await waitFor('retried readings delivered', () => broker.received.length >= before + 4, 10000)
  assert.deepEqual(broker.received.slice(before).map((m) => m.message_id).sort(), dead.map((d) => d.msgId).sort())
  await waitFor('dead-letter table empty', () => readDeadLetters(join(g.dataDir, 'outbox.db')).length === 0, 5000)
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0, 10000)
  assert.match((await g.cli(['outbox', 'dead', 'list'])).stdout, /no dead-lettered readings/)
  await sim.stop()
})
