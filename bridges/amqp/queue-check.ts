// The quorum-queue check (amqp upstream `queue: { type: quorum }`), over AMQP 0-9-1: RabbitMQ 3.x's AMQP 1.0 plugin
// declares only classic queues and says nothing of a queue's type, so a short 0-9-1 connection to the same node
// (same port, user, vhost, TLS) asks: passive declare (does it exist?), then a declare with x-queue-type quorum (the
// broker refuses it with PRECONDITION_FAILED if the queue is classic). That declare needs configure permission on
// the queue: without it (a publish-only user) the type stays unverified. The one file that imports amqplib.
import amqplib from 'amqplib'
import { readFileSync } from 'node:fs'
import { saslMechanism, type AmqpUpstreamConfig } from './config.ts'

export type QueueCheck =
  /** unverified: the queue exists but this user may not (re)declare it (no configure permission), so its type is unknown. */
  | { ok: true; created: boolean; unverified?: string }
  /** permanent: retrying will not help until the operator acts (missing queue, classic queue, no permission). */
  | { ok: false; permanent: boolean; error: string }

export const QUORUM_ARGS = { 'x-queue-type': 'quorum' } as const

/** The RabbitMQ vhost the AMQP 1.0 connection uses (`vhost`, or a `vhost:<name>` hostname; else the default). */
export function vhostOf(cfg: Pick<AmqpUpstreamConfig, 'vhost' | 'hostname'>): string {
  if (cfg.vhost !== undefined) return cfg.vhost
  if (cfg.hostname?.startsWith('vhost:')) return cfg.hostname.slice('vhost:'.length)
  return '/'
}

function errorText(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown }
  return typeof e?.message === 'string' ? e.message : String(err)
}

/**
 * Checks (or, with `declare`, declares when missing) that `queue` is a durable quorum queue on host:port. Never
 * throws; gives up after timeoutMs. The caller treats a failure like a failed connection attempt.
 */
export async function checkQuorumQueue(cfg: AmqpUpstreamConfig, host: string, port: number, queue: string, declare: boolean, timeoutMs: number): Promise<QueueCheck> {
  const mech = saslMechanism(cfg)
  const tls = cfg.tls
  const vhost = vhostOf(cfg)
  let conn: amqplib.ChannelModel | null = null
  let timer: NodeJS.Timeout | undefined
  const work = async (): Promise<QueueCheck> => {
    conn = await amqplib.connect({
      protocol: tls ? 'amqps' : 'amqp', hostname: host, port, vhost,
      // RabbitMQ's 0-9-1 side has no ANONYMOUS: the AMQP 1.0 plugin maps it to the default user, so does this.
      username: cfg.username ?? 'guest', password: cfg.password ?? 'guest', heartbeat: 0,
    }, {
      timeout: timeoutMs,
      ...(mech === 'EXTERNAL' ? { credentials: amqplib.credentials.external() } : {}),
      ...(tls ? {
        ...(tls.ca ? { ca: [readFileSync(tls.ca)] } : {}),
        ...(tls.cert ? { cert: readFileSync(tls.cert) } : {}),
        ...(tls.key ? { key: readFileSync(tls.key) } : {}),
        servername: tls.servername ?? host,
        rejectUnauthorized: tls.rejectUnauthorized,
      } : {}),
    })
    conn.on('error', () => undefined)
    // A refused declare closes its channel: each step gets its own.
    let ch = await conn.createChannel()
    ch.on('error', () => undefined)
    let exists = true
    try { await ch.checkQueue(queue) } catch (err) {
      if (!/NOT_FOUND|404/.test(errorText(err))) return { ok: false, permanent: /ACCESS_REFUSED|403/.test(errorText(err)), error: `checking queue "${queue}": ${errorText(err)}` }
      exists = false
      if (!declare) return { ok: false, permanent: true, error: `queue "${queue}" does not exist on ${host}:${port} (vhost ${vhost}): declare it as a quorum queue (see the README, AMQP cluster) or set queue.declare: true` }
      ch = await conn.createChannel()
      ch.on('error', () => undefined)
    }
    try {
      await ch.assertQueue(queue, { durable: true, arguments: { ...QUORUM_ARGS } })
    } catch (err) {
      const text = errorText(err)
      // A user limited to publishing (README, per-gateway users) may not declare: the queue exists, its type is the operator's word.
      if (exists && /ACCESS_REFUSED|403/.test(text)) return { ok: true, created: false, unverified: `queue "${queue}" exists; its type cannot be checked: this user has no configure permission on it (${text})` }
      if (/x-queue-type/.test(text)) return { ok: false, permanent: true, error: `queue "${queue}" is not a quorum queue: ${text}` }
      return { ok: false, permanent: /PRECONDITION_FAILED|ACCESS_REFUSED|406|403/.test(text), error: `${exists ? 'checking' : 'declaring'} queue "${queue}" as quorum: ${text}` }
    }
    return { ok: true, created: !exists }
  }
  const timeout = new Promise<QueueCheck>((resolve) => { timer = setTimeout(() => resolve({ ok: false, permanent: false, error: `quorum queue check on ${host}:${port}: no answer within ${timeoutMs} ms` }), timeoutMs) })
  try {
    return await Promise.race([work().catch((err: unknown): QueueCheck => ({ ok: false, permanent: false, error: `quorum queue check on ${host}:${port}: ${errorText(err)}` })), timeout])
  } finally {
    clearTimeout(timer)
    const c = conn as amqplib.ChannelModel | null
    if (c) c.close().catch(() => undefined)
  }
}
