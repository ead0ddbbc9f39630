// The core's sections of edgeway.yaml (gateway, log, mqtt, http, outbox, roles, the mqtt upstream): validated here,
// composed with the bridges' and device links' sections into the whole file by app/config/schema.ts. The core's
// modules type their options from these, so gateway/ never needs the application's full config type.
import { z } from 'zod'
import { hostname } from 'node:os'
import { filterProblem, ROLE_NAME_RE } from '../broker/roles.ts'

const port = z.number().int().min(0).max(65535)
const host = z.string().min(1)

export const listener = (defPort: number, defEnabled: boolean) => z.object({
  enabled: z.boolean().default(defEnabled),
  host: host.default('0.0.0.0'),
  port: port.default(defPort),
}).strict()

export const mqttUpstream = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'lowercase letters, digits, - and _, at most 32 characters'),
  type: z.literal('mqtt'),
  enabled: z.boolean().default(true),
  /** mqtt://host:port or mqtts://host:port */
  url: z.string().regex(/^(mqtts?|wss?):\/\/.+/, 'an mqtt://, mqtts://, ws:// or wss:// URL'),
  clientId: z.string().min(1).optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  /** Readings go to `<topicPrefix><device>/telemetry`. */
  topicPrefix: z.string().default('edgeway/'),
  qos: z.union([z.literal(1), z.literal(2)]).default(1),
  /**
   * MQTT 5 (default): a PUBACK/PUBREC reason code >= 0x80 dead-letters the reading, user properties are forwarded.
   * 4 (MQTT 3.1.1) only for brokers without MQTT 5: they PUBACK a publish they drop.
   */
  protocolVersion: z.union([z.literal(4), z.literal(5)]).default(5),
  /** Unacknowledged publishes in flight: the forwarder's credit (under MQTT 5 at most the broker's Receive Maximum). */
  maxInflight: z.number().int().min(1).max(65535).default(256),
  /**
   * The broker's packet size limit in bytes, for a broker that does not announce one (an MQTT 5 broker's CONNACK
   * Maximum Packet Size is used when it is smaller). A reading whose PUBLISH is larger is dead-lettered, not sent:
   * a broker drops the link on such a packet.
   */
  maxPacketSize: z.number().int().min(64).max(268435460).optional(),
  reconnectMinMs: z.number().int().min(10).default(500),
  reconnectMaxMs: z.number().int().min(100).default(30000),
  ca: z.string().optional(),
}).strict()

const ruleAction = z.enum(['publish', 'subscribe', 'both'])

/** `- { allow: subscribe, topic: "devices/+/telemetry" }` or `- { deny: both, topic: "devices/secret/#" }`. */
const roleRule = z.object({
  allow: ruleAction.optional(),
  deny: ruleAction.optional(),
  /** An MQTT topic filter: `+` a whole level, `#` the last level; `%u` is the client's own name. */
  topic: z.string().superRefine((t, ctx) => {
    const problem = filterProblem(t)
    if (problem) ctx.addIssue({ code: 'custom', message: `invalid topic filter: ${problem}` })
  }),
}).strict().refine((r) => (r.allow === undefined) !== (r.deny === undefined), 'give exactly one of "allow" or "deny" (publish, subscribe or both)')

/**
 * Roles of integration clients (`edgeway client add NAME --role ROLE`); semantics in gateway/broker/roles.ts.
 * Built-in: observer, operator; a role defined here with one of those names replaces the built-in. In openBroker /
 * allowAnonymous mode, the deny rules of a role named `anonymous` bind anonymous clients (e.g. deny `$SYS/#`).
 */
const ROLE_NAME_RULE = 'letters, digits, "_", "." and "-", 1 to 32 characters, starting with a letter or digit'
export const rolesSection = z.record(
  z.string().regex(ROLE_NAME_RE, ROLE_NAME_RULE),
  z.object({ rules: z.array(roleRule) }).strict(),
  // zod's own message for a bad record key is only "Invalid key in record"
  { error: (iss) => (iss.code === 'invalid_key' ? `invalid role name: use ${ROLE_NAME_RULE}` : undefined) },
)

const GATEWAY_ID_DESCRIPTION = 'Part of every reading\'s message id: keep it stable and unique per gateway. ' +
  'Default: this machine\'s host name (characters other than letters, digits, ".", "_" and "-" replaced by "-"; "edgeway" if it has none).'

/** The default gateway.id: the host name of the machine the gateway runs on, computed when the config is parsed. */
export function defaultGatewayId(): string {
  return hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'edgeway'
}

export const gatewaySection = z.object({
  /** Part of every reading's message id: keep it stable and unique per gateway. */
  // Defaulted by a transform, not .default(): z.toJSONSchema would write the generating machine's host name into
  // the committed edgeway.schema.json. The input schema shows the optional string and this description instead.
  id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, ".", "_" and "-", 1 to 64 characters')
    .describe(GATEWAY_ID_DESCRIPTION).optional().transform((id) => id ?? defaultGatewayId()),
  dataDir: z.string().min(1).default('./data'),
}).strict()

export const logSection = z.object({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
}).strict()

export const mqttSection = z.object({
  tcp: listener(1883, true).prefault({}),
  tls: listener(8883, false).extend({
    cert: z.string().optional(),
    key: z.string().optional(),
    ca: z.string().optional(),
    /** Ask devices for a client certificate (verified against `ca`). */
    requestCert: z.boolean().default(false),
  }).strict().prefault({}),
  ws: listener(8083, true).extend({ path: z.string().startsWith('/').default('/mqtt') }).strict().prefault({}),
  /** Largest MQTT packet accepted; larger ones close the connection. */
  maxPacketSize: z.number().int().min(64).max(268435455).default(256 * 1024),
  /** Devices without credentials may connect (still bound by the ACL: they can only use `devices/<clientId>/...`). */
  allowAnonymous: z.boolean().default(false),
  /** Lab mode: anonymous access and no ACL at all. Never on a network you do not control. */
  openBroker: z.boolean().default(false),
  /** Upper bound for a client's keepalive in seconds (0 = any). */
  keepaliveLimit: z.number().int().min(0).max(65535).default(0),
  connectTimeoutMs: z.number().int().min(100).default(30000),
  /** Failed MQTT logins: per name `budget` tries, per address `addressBudget`, then a lockout that doubles. */
  loginThrottle: z.object({
    budget: z.number().int().min(1).max(1000).default(5),
    addressBudget: z.number().int().min(1).max(100000).default(50),
    lockSeconds: z.number().min(0.1).max(3600).default(30),
  }).strict().prefault({}),
}).strict()

export const outboxSection = z.object({
  /** Retention: drop the oldest readings beyond this many bytes of payload (counted, logged). */
  maxBytes: z.number().int().min(1024).default(512 * 1024 * 1024),
  /** Retention: drop readings older than this (seconds). */
  maxAgeSeconds: z.number().int().min(1).default(7 * 24 * 3600),
  /** Group commit: flush after this many readings ... */
  batchRows: z.number().int().min(1).max(100000).default(1000),
  /** ... or when the event loop is idle; "FULL" waits for the disk before any ack. */
  synchronous: z.enum(['FULL', 'NORMAL']).default('FULL'),
  /**
   * Disk full: readings wait this long, unacknowledged, while the gateway retries the write every 0.5 s; only then
   * does the device's connection close (it resends after reconnecting). 0: close at once.
   */
  diskFullHoldSeconds: z.number().int().min(0).max(3600).default(60),
  /**
   * The priority lane: these readings go to every upstream before routine ones (e.g. alarms while a backlog
   * drains). Per-device order holds within each lane; a priority reading may overtake its device's routine ones.
   */
  priority: z.object({
    /** A reading that carries any of these metrics, e.g. ["alarm", "smoke"]. */
    metrics: z.array(z.string().min(1).max(64)).default([]),
    /** Every reading of these devices. */
    devices: z.array(z.string().min(1)).default([]),
  }).strict().prefault({}),
}).strict()

export type MqttSection = z.infer<typeof mqttSection>
export type OutboxSection = z.infer<typeof outboxSection>
export type MqttUpstreamConfig = z.infer<typeof mqttUpstream>
