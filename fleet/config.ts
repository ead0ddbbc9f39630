// The `fleet:` section of edgeway.yaml: what `edgeway fleet` (the operator's server, not the edge board) connects to,
// consumes and serves. Referenced from app/config/schema.ts; validated at start like the rest of the file.
import { z } from 'zod'
import { dashboardConfig } from '../gateway/dashboard/config.ts'

const brokerHost = z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535).default(5672) }).strict()

/** `{gateway}` is the only placeholder in the command address (the fleet fills it per target gateway). */
const commandTemplate = z.string().min(1).refine(
  (s) => s.includes('{gateway}') && [...s.matchAll(/\{([^}]*)\}/g)].every((m) => m[1] === 'gateway'),
  'needs the {gateway} placeholder (and no other), e.g. /exchange/amq.topic/cmd.{gateway}',
)

export const fleetSection = z.object({
  amqp: z.object({
    /** One broker ... */
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).default(5672),
    /** ... or several (tried in turn on reconnect, e.g. the nodes of a cluster). */
    hosts: z.array(brokerHost).min(1).optional(),
    /** PLAIN when username is set, else ANONYMOUS. */
    username: z.string().optional(),
    password: z.string().optional(),
    /** RabbitMQ virtual host (sent as AMQP open hostname `vhost:<vhost>`). */
    vhost: z.string().optional(),
    containerId: z.string().min(1).default('edgeway-fleet'),
    reconnectMinMs: z.number().int().min(10).default(500),
    reconnectMaxMs: z.number().int().min(100).default(30000),
  }).strict().refine((a) => (a.host === undefined) !== (a.hosts === undefined), 'give either host (and port) or hosts, not both')
    .refine((a) => (a.username === undefined) === (a.password === undefined), 'username and password go together'),
  /**
   * Consumed for every gateway's lifecycle messages. RabbitMQ 3.10 (AMQP 1.0 plugin, address format v1): a source
   * `/exchange/<exchange>/<binding key>` is a private queue bound with that key, so `/exchange/amq.topic/status.*`
   * gets what gateways send to `/exchange/amq.topic/status.<gateway>`; the routing key names the sender.
   */
  statusAddress: z.string().min(1).default('/exchange/amq.topic/status.*'),
  /** Where commands for a gateway go (the gateway's upstream `commandAddress`, `{gateway}` expanded). */
  commandAddress: commandTemplate.default('/exchange/amq.topic/cmd.{gateway}'),
  /** The fleet's own reply queue (the gateways answer to `reply_to`); one per fleet process. */
  replyAddress: z.string().regex(/^\/queue\/[A-Za-z0-9._-]{1,200}$/, 'a /queue/<name> address').default('/queue/edgeway-fleet-replies'),
  /** A command without a reply within this time is reported as timed out. */
  commandTimeoutSeconds: z.number().min(0.5).max(600).default(15),
  /** Used when a message carries neither `ttlSeconds` nor an AMQP ttl (older gateways: 3 x their heartbeat). */
  defaultTtlSeconds: z.number().min(1).max(86400).default(180),
  /** Bounds: a flood of made-up gateways or devices cannot exhaust memory or disk (the excess is refused, counted). */
  maxGateways: z.number().int().min(1).max(100000).default(2000),
  maxDevicesPerGateway: z.number().int().min(1).max(100000).default(2000),
  maxAlertsPerGateway: z.number().int().min(1).max(10000).default(200),
  /** The fleet's own last-known state (fleet.db) lives here. */
  dataDir: z.string().min(1).default('./fleet-data'),
  http: z.object({
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8090),
  }).strict().prefault({}),
  /** Same login as the gateway's dashboard: `edgeway dashboard set-password --print` makes the hash. */
  dashboard: dashboardConfig.pick({ passwordHash: true, sessionHours: true, allowedOrigins: true, loginThrottle: true }).prefault({}),
}).strict()

export type FleetConfig = z.infer<typeof fleetSection>

/** The brokers to try, in order. */
export function brokerList(a: FleetConfig['amqp']): { host: string; port: number }[] {
  return a.hosts ?? [{ host: a.host!, port: a.port }]
}
