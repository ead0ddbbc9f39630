// The amqp upstream's cluster and quorum-queue config (bridges/amqp/config.ts): `host` xor `hosts`, the node list in
// order with the shared default port, and the quorum-queue rules RabbitMQ 3.10's AMQP 1.0 plugin imposes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { amqpHosts, amqpUpstream, quorumQueueName } from '../bridges/amqp/config.ts'

const base = { name: 'cloud', type: 'amqp', username: 'u', password: 'p' }
const issues = (v: unknown): string[] => { const r = amqpUpstream.safeParse(v); return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`) }

test('host xor hosts; hosts in order, each with the upstream port unless it names one', () => {
  assert.match(issues({ ...base, host: 'a', hosts: [{ host: 'b' }] }).join('\n'), /^host: set either host .* or hosts/m)
  assert.match(issues({ ...base }).join('\n'), /^host: set either host/m)
  assert.match(issues({ ...base, hosts: [] }).join('\n'), /hosts/)
  const cfg = amqpUpstream.parse({ ...base, port: 5673, hosts: [{ host: 'n1' }, { host: 'n2', port: 6000 }, { host: 'n3' }] })
  assert.deepEqual(amqpHosts(cfg), [{ host: 'n1', port: 5673 }, { host: 'n2', port: 6000 }, { host: 'n3', port: 5673 }])
  assert.deepEqual(amqpHosts(amqpUpstream.parse({ ...base, host: 'one' })), [{ host: 'one', port: 5672 }])
})

test('quorum queues: not through /queue/, a name from /amq/queue/<name> or queue.name, never per device', () => {
  assert.match(issues({ ...base, host: 'h', address: '/queue/tele', queue: { type: 'quorum' } }).join('\n'), /^address: a quorum queue cannot be reached through a \/queue\/ address/m)
  assert.match(issues({ ...base, host: 'h', address: '/exchange/amq.topic/t.{gateway}', queue: { type: 'quorum' } }).join('\n'), /^queue.name: queue.name is needed/m)
  assert.match(issues({ ...base, host: 'h', address: '/exchange/amq.topic/t', queue: { type: 'quorum', name: 'q-{device}' } }).join('\n'), /Raft group per device/)
  assert.match(issues({ ...base, host: 'h', address: '/amq/queue/t', queue: { type: 'classic' } }).join('\n'), /queue.type/)
  const ok = amqpUpstream.parse({ ...base, host: 'h', address: '/amq/queue/tele-{gateway}', queue: { type: 'quorum' } })
  assert.equal(ok.queue?.declare, false, 'the operator declares it unless told otherwise')
  assert.equal(quorumQueueName(ok), 'tele-{gateway}')
  assert.equal(quorumQueueName(amqpUpstream.parse({ ...base, host: 'h', address: '/exchange/amq.topic/t.{device}', queue: { type: 'quorum', name: 'telemetry' } })), 'telemetry')
  assert.equal(quorumQueueName({ address: '/amq/queue/per-{device}' }), null)
})
