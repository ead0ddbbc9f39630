/**
 * Delivery report against a running gateway and your own AMQP 1.0 broker:
 *   npm run verify -- --mqtt mqtt://gw:1883 --amqp amqp://user:pass@broker:5672 --address /queue/telemetry \
 *                     [--devices 5] [--count 1000] [--device-user u --device-password p] [--wait 60]
 * Simulated devices publish numbered readings (QoS 1) and remember which the gateway acknowledged; a consumer on
 * `--address` records what arrives. Prints sent / acked / delivered / duplicated / lost / out-of-order; exit 1 when
 * anything acked was lost. The consumer accepts (removes) what it receives: point it at a queue you can drain.
 * Device ids are verify-<n>-<random>, so earlier runs do not mix in.
 */
import { parseArgs } from 'node:util'
import { simulateDevice } from '../test/helpers/load.ts'
import { amqpConsumer } from '../test/helpers/amqp.ts'
import { deliveryReport, formatReport } from '../test/helpers/report.ts'

const { values: a } = parseArgs({
  options: {
    mqtt: { type: 'string', default: 'mqtt://127.0.0.1:1883' },
    amqp: { type: 'string', default: 'amqp://guest:guest@127.0.0.1:5672' },
    address: { type: 'string', default: '/queue/edgeway' },
    vhost: { type: 'string' },
    devices: { type: 'string', default: '5' },
    count: { type: 'string', default: '1000' },
    'device-user': { type: 'string' },
    'device-password': { type: 'string' },
    wait: { type: 'string', default: '60' },
  },
})

const u = new URL(a.amqp!)
const run = Math.random().toString(36).slice(2, 7)
const consumer = await amqpConsumer(Number(u.port || 5672), a.address!, {
  reconnect: true,
  target: { host: u.hostname, username: decodeURIComponent(u.username) || 'guest', password: decodeURIComponent(u.password) || 'guest', hostname: a.vhost ? `vhost:${a.vhost}` : u.hostname },
})
const count = Number(a.count)
const auth = a['device-user'] ? { auth: { username: a['device-user'], password: a['device-password'] ?? '' } } : {}
const sims = Array.from({ length: Number(a.devices) }, (_, i) => simulateDevice(a.mqtt!, `verify-${i}-${run}`, { window: 8, max: count, ...auth }))
const deadline = Date.now() + Number(a.wait) * 1000
const done = (): boolean => sims.every((s) => s.sent === count && s.acked.size === count) && deliveryReport(sims, consumer.got).lost === 0
while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250))
for (const s of sims) await s.stop()
await new Promise((r) => setTimeout(r, 1000)) // late duplicates
const report = deliveryReport(sims, consumer.got)
process.stdout.write(`${formatReport(report)}\n`)
await consumer.close()
process.exit(report.lost === 0 && report.outOfOrder === 0 ? 0 : 1)
