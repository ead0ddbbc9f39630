// Per-gateway RabbitMQ users and `edgeway doctor` (bridges/amqp/doctor.ts), against a real RabbitMQ: the README's
// exact rabbitmqctl commands (add_user, set_permissions, set_topic_permissions, the eval that declares a quorum
// queue) make a user that may publish under its own routing keys only; the doctor says ok for the gateway's own
// addresses, fails for another gateway's key, warns that a publish-only user cannot verify the queue's type, and
// reports a missing quorum queue.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

let rmq: RabbitMq

before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
  for (const args of [
    ['add_user', 'gw-a', 'a-long-random-password'],
    ['set_permissions', '-p', '/', 'gw-a', '^$', '^amq\\.topic$', '^cmd-gw-a$'],
    ['set_topic_permissions', '-p', '/', 'gw-a', 'amq.topic', '^(telemetry|status)\\.gw-a(\\..*)?$', '^$'],
    ['eval', 'rabbit_amqqueue:declare(rabbit_misc:r(<<"/">>, queue, <<"telemetry">>), true, false, [{<<"x-queue-type">>, longstr, <<"quorum">>}], none, <<"ops">>).'],
  ]) {
    const r = await rmq.ctl(args)
    assert.equal(r.code, 0, `rabbitmqctl ${args.join(' ')}: ${r.out}`)
  }
  const q = await rmq.ctl(['list_queues', 'name', 'type', '--formatter', 'json'])
  assert.deepEqual((JSON.parse(q.out.slice(q.out.indexOf('['))) as { name: string; type: string }[]).find((x) => x.name === 'telemetry'), { name: 'telemetry', type: 'quorum' }, 'the README\'s eval declares a quorum queue')
})

interface Result { name: string; ok: boolean; level: string; detail: string; fix?: string }

async function doctor(address: string, queueName: string): Promise<Result[]> {
  const g: GatewayProc = await startGatewayProc({
    gateway: { id: 'gw-a' },
    upstreams: [{
      name: 'cloud', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'gw-a', password: 'a-long-random-password',
      address, statusAddress: '/exchange/amq.topic/status.{gateway}', queue: { type: 'quorum', name: queueName },
    }],
  }, { start: false })
  cleanups.push(() => g.cleanup())
  const r = await g.cli(['doctor', '--json'])
  return (JSON.parse(r.stdout) as Result[]).filter((x) => x.name === 'amqp cloud')
}

test('doctor: the gateway\'s own routing keys publish; the quorum queue exists (type unverifiable for a publish-only user)', async () => {
  const rs = await doctor('/exchange/amq.topic/telemetry.{gateway}.{device}', 'telemetry')
  assert.equal(rs.length, 2, JSON.stringify(rs))
  assert.equal(rs[0]!.level, 'ok', rs[0]!.detail)
  assert.match(rs[0]!.detail, /telemetry\.gw-a\.doctor-probe: can publish \(probe accepted\)/)
  assert.match(rs[0]!.detail, /status\.gw-a: can attach/)
  // A publish-only user may not declare, so the type check stays a warning: the queue exists, its type is unknown.
  assert.equal(rs[1]!.level, 'warn', rs[1]!.detail)
  assert.match(rs[1]!.detail, /"telemetry" exists; its type cannot be checked: this user has no configure permission/)
})

test('doctor: another gateway\'s routing key is refused by the topic permission, a missing queue is reported', async () => {
  const rs = await doctor('/exchange/amq.topic/telemetry.gw-b.{device}', 'nope')
  assert.equal(rs[0]!.level, 'fail', rs[0]!.detail)
  assert.match(rs[0]!.detail, /telemetry\.gw-b\.doctor-probe: .*(access|refused|denied)/i)
  assert.match(rs[0]!.fix ?? '', /set_topic_permissions/)
  assert.equal(rs[1]!.level, 'fail')
  assert.match(rs[1]!.detail, /queue "nope" does not exist/)
})
