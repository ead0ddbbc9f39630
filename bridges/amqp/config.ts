// The `amqp` upstream's YAML section: validated here, referenced by the upstream union in app/config/schema.ts.
import { z } from 'zod'

const PLACEHOLDERS = ['gateway', 'device'] as const

/** `{gateway}` and `{device}` are the only placeholders; anything else in braces is a typo caught at load time. */
const addressTemplate = z.string().min(1).refine(
  (s) => [...s.matchAll(/\{([^}]*)\}/g)].every((m) => (PLACEHOLDERS as readonly string[]).includes(m[1]!)),
  'only {gateway} and {device} placeholders are allowed',
)

export const amqpUpstream = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'lowercase letters, digits, - and _, at most 32 characters'),
  type: z.literal('amqp'),
  enabled: z.boolean().default(true),
  /** One broker. Exclusive with `hosts`. */
  host: z.string().min(1).optional(),
  /** The port of `host`, and of each `hosts` entry that names none. */
  port: z.number().int().min(1).max(65535).default(5672),
  /**
   * The nodes of a cluster (RabbitMQ): tried in order; on a lost link the next one (round the list) is tried at once,
   * then the backoff applies once every node has failed in a row. Exclusive with `host`.
   */
  hosts: z.array(z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535).optional() }).strict()).min(1).max(16).optional(),
  /**
   * The telemetry queue's type, checked (or declared) over AMQP 0-9-1 before each connection is used: RabbitMQ 3.x's
   * AMQP 1.0 plugin can neither declare a quorum queue nor attach to one through a /queue/ address (it redeclares it
   * as classic and is refused), so quorum queues are addressed as /amq/queue/<name> or reached through an exchange.
   */
  queue: z.object({
    type: z.literal('quorum'),
    /** The queue; defaults to <name> of an `/amq/queue/<name>` address. `{gateway}` allowed. */
    name: addressTemplate.optional(),
    /** Declare it (durable, x-queue-type quorum) when missing; otherwise it must exist (the operator declared it). */
    declare: z.boolean().default(false),
  }).strict().optional(),
  /** PLAIN needs username/password; EXTERNAL needs a TLS client certificate; ANONYMOUS sends no credentials. */
  sasl: z.enum(['PLAIN', 'ANONYMOUS', 'EXTERNAL']).optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  tls: z.object({
    /** PEM file paths. */
    ca: z.string().optional(),
    cert: z.string().optional(),
    key: z.string().optional(),
    /** TLS server name (SNI and certificate check); defaults to `host`. */
    servername: z.string().optional(),
    rejectUnauthorized: z.boolean().default(true),
  }).strict().optional(),
  /** AMQP open `hostname`; RabbitMQ selects the virtual host from it (`vhost:<name>`). */
  hostname: z.string().optional(),
  /** RabbitMQ virtual host: shorthand for hostname `vhost:<vhost>`. */
  vhost: z.string().optional(),
  /** AMQP container id; defaults to `edgeway-<gateway id>-<upstream name>`. */
  containerId: z.string().min(1).optional(),
  /** Target address per reading; `{gateway}` and `{device}` are replaced (one sender link per distinct address). */
  address: addressTemplate.default('/queue/edgeway'),
  /**
   * Ask for a durable target terminus (durability "configuration"). RabbitMQ declares `/queue/<name>` addresses as
   * durable queues only then: without it the queue, and every message it held, is gone after a broker restart.
   */
  durableTarget: z.boolean().default(true),
  /**
   * at-most-once: pre-settled, the row is acked once written to the socket.
   * at-least-once: the row is acked on the broker's `accepted`.
   * exactly-once: at-least-once plus the stable message_id, for deduplication by the receiver (not AMQP transactions).
   */
  delivery: z.enum(['at-most-once', 'at-least-once', 'exactly-once']).default('at-least-once'),
  /** Unsettled messages in flight: the forwarder's credit (also bounded by the link credit the broker grants). */
  maxInflight: z.number().int().min(1).max(65535).default(500),
  reconnectMinMs: z.number().int().min(10).default(500),
  reconnectMaxMs: z.number().int().min(100).default(30000),
  /**
   * Largest encoded message sent; larger readings are dead-lettered instead of sent. The broker's own limit, when it
   * announces one on attach (max-message-size), applies too. Set it to the broker's limit when the broker does not
   * announce it: RabbitMQ 3.10 does not, and ends the whole session on an oversized message instead of rejecting it.
   */
  maxMessageBytes: z.number().int().min(256).optional(),
  /** No AMQP open + sender attach within this time counts as a failed attempt. */
  connectTimeoutMs: z.number().int().min(100).default(10000),
  /** Receiver link for commands (`{gateway}` allowed); no downlink when unset. */
  commandAddress: addressTemplate.optional(),
  /** Periodic gateway status messages go here (`{gateway}` allowed); none when unset. */
  statusAddress: addressTemplate.optional(),
  heartbeatSeconds: z.number().int().min(1).default(60),
}).strict().superRefine((u, ctx) => {
  const mech = u.sasl ?? (u.username !== undefined ? 'PLAIN' : 'ANONYMOUS')
  if (mech === 'PLAIN' && (u.username === undefined || u.password === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['sasl'], message: 'SASL PLAIN needs username and password' })
  }
  if (mech === 'EXTERNAL' && !(u.tls?.cert && u.tls.key)) {
    ctx.addIssue({ code: 'custom', path: ['sasl'], message: 'SASL EXTERNAL needs tls.cert and tls.key (the client certificate is the identity)' })
  }
  if (u.hostname !== undefined && u.vhost !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['vhost'], message: 'set either hostname or vhost, not both' })
  }
  if ((u.host === undefined) === (u.hosts === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['host'], message: 'set either host (one broker) or hosts (a cluster\'s nodes), not both and not neither' })
  }
  if (u.queue) {
    if (u.queue.name === undefined && quorumQueueName(u) === null) {
      ctx.addIssue({ code: 'custom', path: ['queue', 'name'], message: 'queue.name is needed unless address is /amq/queue/<name> (without {device})' })
    }
    if (u.address.startsWith('/queue/')) {
      ctx.addIssue({ code: 'custom', path: ['address'], message: 'a quorum queue cannot be reached through a /queue/ address (RabbitMQ\'s AMQP 1.0 plugin redeclares it as classic and is refused): use /amq/queue/<name> or an /exchange/ address bound to the queue' })
    }
    if (u.queue.name?.includes('{device}')) {
      ctx.addIssue({ code: 'custom', path: ['queue', 'name'], message: 'one quorum queue per device is a Raft group per device: route devices to one queue through an exchange instead' })
    }
  }
  if (u.reconnectMaxMs < u.reconnectMinMs) {
    ctx.addIssue({ code: 'custom', path: ['reconnectMaxMs'], message: 'reconnectMaxMs must be >= reconnectMinMs' })
  }
})

export type AmqpUpstreamConfig = z.infer<typeof amqpUpstream>

/** The SASL mechanism actually used (explicit, or implied by the presence of a username). */
export function saslMechanism(cfg: AmqpUpstreamConfig): 'PLAIN' | 'ANONYMOUS' | 'EXTERNAL' {
  return cfg.sasl ?? (cfg.username !== undefined ? 'PLAIN' : 'ANONYMOUS')
}

/** The nodes to try, in order (`host` is a list of one). */
export function amqpHosts(cfg: Pick<AmqpUpstreamConfig, 'host' | 'hosts' | 'port'>): { host: string; port: number }[] {
  if (cfg.hosts) return cfg.hosts.map((h) => ({ host: h.host, port: h.port ?? cfg.port }))
  return [{ host: cfg.host!, port: cfg.port }]
}

/** The quorum queue to check (unexpanded template), from `queue.name` or an `/amq/queue/<name>` address; null if neither. */
export function quorumQueueName(cfg: { address: string; queue?: { name?: string | undefined } | undefined }): string | null {
  if (cfg.queue?.name !== undefined) return cfg.queue.name
  const m = /^\/amq\/queue\/([^/]+)$/.exec(cfg.address)
  return m && !m[1]!.includes('{device}') ? m[1]! : null
}
