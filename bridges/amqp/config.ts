// The `amqp` upstream's YAML section: validated here, referenced by the upstream union in gateway/config/schema.ts.
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
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(5672),
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
  if (u.reconnectMaxMs < u.reconnectMinMs) {
    ctx.addIssue({ code: 'custom', path: ['reconnectMaxMs'], message: 'reconnectMaxMs must be >= reconnectMinMs' })
  }
})

export type AmqpUpstreamConfig = z.infer<typeof amqpUpstream>

/** The SASL mechanism actually used (explicit, or implied by the presence of a username). */
export function saslMechanism(cfg: AmqpUpstreamConfig): 'PLAIN' | 'ANONYMOUS' | 'EXTERNAL' {
  return cfg.sasl ?? (cfg.username !== undefined ? 'PLAIN' : 'ANONYMOUS')
}
