// `edgeway doctor`'s amqp checks, per enabled amqp upstream and node (`host`/`hosts`): can the configured user publish
// where the gateway sends (upstream.ts probe(): a connection of its own, a probe message to the telemetry address,
// an attach to the status address), and, with `queue: { type: quorum }`, is the telemetry queue there and a quorum
// queue (queue-check.ts; never declared by the doctor). Returns the doctor's result shape; never throws.
import { createLogger } from '../../gateway/log.ts'
import { amqpHosts, quorumQueueName, type AmqpUpstreamConfig } from './config.ts'
import { expandAddress } from './map.ts'

export interface AmqpCheck { name: string; ok: boolean; level: 'ok' | 'warn' | 'fail'; detail: string; fix?: string }

const PERMISSIONS_FIX = 'give the gateway\'s user write permission on the exchange/queue and a topic permission for its routing keys (README, AMQP: per-gateway users): `rabbitmqctl set_permissions` / `set_topic_permissions`'

export async function checkAmqp(config: { gateway: { id: string }; upstreams: readonly { type: string; enabled: boolean }[] }, timeoutMs = 5000): Promise<AmqpCheck[]> {
  const ups = config.upstreams.filter((u): u is AmqpUpstreamConfig => u.type === 'amqp' && u.enabled)
  if (!ups.length) return []
  const { AmqpUpstream } = await import('./upstream.ts')
  const { checkQuorumQueue } = await import('./queue-check.ts')
  const log = createLogger('silent')
  const out: AmqpCheck[] = []
  for (const u of ups) {
    const name = `amqp ${u.name}`
    const r = (level: AmqpCheck['level'], detail: string, fix?: string): AmqpCheck => ({ name, ok: level !== 'fail', level, detail, ...(fix ? { fix } : {}) })
    try {
      const probes = await new AmqpUpstream(u, config.gateway.id, log).probe(timeoutMs)
      const bad = probes.filter((p) => !p.ok)
      const lines = probes.map((p) => `${p.endpoint} ${p.address}: ${p.ok ? (p.sent ? 'can publish (probe accepted)' : 'can attach (no message sent)') : p.detail}`)
      out.push(bad.length
        ? r('fail', `user ${u.username ?? '(anonymous)'} cannot publish everywhere the gateway sends:\n${lines.join('\n')}`, PERMISSIONS_FIX)
        : r('ok', lines.join('\n')))
      const queue = u.queue && quorumQueueName(u)
      if (u.queue && queue) {
        const q = expandAddress(queue, config.gateway.id)
        for (const h of amqpHosts(u)) {
          const c = await checkQuorumQueue(u, h.host, h.port, q, false, timeoutMs)
          out.push(c.ok
            ? c.unverified
              ? r('warn', `${h.host}:${h.port}: ${c.unverified}`, `check it as an administrator: rabbitmqctl list_queues name type | grep ${q}`)
              : r('ok', `${h.host}:${h.port}: queue "${q}" is a quorum queue`)
            : r(c.permanent ? 'fail' : 'warn', `${h.host}:${h.port}: ${c.error}`, u.queue.declare
              ? 'the gateway declares it on its first connection (queue.declare: true)'
              : `declare it: see the README (AMQP: quorum queues), or set queue.declare: true`))
          if (!c.ok && u.queue.declare) out[out.length - 1] = { ...out[out.length - 1]!, level: 'warn', ok: true }
        }
      }
    } catch (err) {
      out.push(r('fail', `check failed: ${(err as Error).message}`))
    }
  }
  return out
}
