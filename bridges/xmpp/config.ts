// The `xmpp:` section of edgeway.yaml: validated here, one line in app/config/schema.ts.
import { z } from 'zod'
import { DEVICE_ID_OR_ALL_RE } from '../../gateway/readings.ts'

/** A bare JID (`alice@example.org`), a whole domain (`example.org`) or `*` (anyone). */
const jidPattern = z.string().min(1).max(1023).refine(
  (s) => s === '*' || /^([^@/\s]+@)?[^@/\s]+$/.test(s),
  'a bare JID (user@domain), a domain, or "*"',
)
const deviceId = z.string().regex(DEVICE_ID_OR_ALL_RE, 'a device id or "*"')

const allowRule = z.object({
  /** Who: bare JIDs, whole domains, or "*". */
  jids: z.array(jidPattern).min(1),
  /** Which devices ("*" = all); with `groups`, either list matching is enough. Neither set: all devices. */
  devices: z.array(deviceId).optional(),
  groups: z.array(z.string().min(1)).optional(),
  /** May also send commands (chat) to these devices, not only see their presence. */
  commands: z.boolean().default(true),
}).strict()

const threshold = z.object({
  metric: z.string().min(1),
  /** Deprecated with `xmpp.alerts.thresholds`: the same fields as `alerts.thresholds` (there: `device`, one per rule). */
  above: z.number().optional(),
  below: z.number().optional(),
  /** Devices this applies to (default: all). */
  devices: z.array(deviceId).optional(),
}).strict().refine((t) => t.above !== undefined || t.below !== undefined, 'a threshold needs `above` or `below`')

export const xmppSection = z.object({
  enabled: z.boolean().default(false),
  /** component: XEP-0114 external component, every device its own JID <device>@<component.domain> (recommended).
   *  client: one gateway account (server.port 5222); devices are addressed by a prefix (`<device> <command>`). */
  mode: z.enum(['component', 'client']).default('component'),
  server: z.object({
    host: z.string().min(1).default('127.0.0.1'),
    /** Default: 5347 (component) or 5222 (client). */
    port: z.number().int().min(1).max(65535).optional(),
  }).strict().prefault({}),
  component: z.object({
    /** The component's domain as configured on the server, e.g. `devices.example.org`. */
    domain: z.string().min(1).optional(),
    secret: z.string().min(1).optional(),
  }).strict().prefault({}),
  client: z.object({
    jid: z.string().regex(/^[^@/\s]+@[^@/\s]+(\/.+)?$/, 'user@domain[/resource]').optional(),
    password: z.string().optional(),
  }).strict().prefault({}),
  tls: z.object({
    /** none: plain TCP (a component port on the same host or loopback; in client mode STARTTLS is used when the
     *  server offers it); direct: TLS from the first byte (xmpps://). Certificates are checked against the system CAs
     *  plus NODE_EXTRA_CA_CERTS. */
    mode: z.enum(['none', 'direct']).default('none'),
  }).strict().prefault({}),
  /** Who may subscribe to (and command) which devices. Empty: nobody (subscriptions are refused). */
  allow: z.array(allowRule).default([]),
  /** Device groups for `allow[].groups`: group name -> device ids. */
  groups: z.record(z.string(), z.array(deviceId)).default({}),
  /** Blocked JIDs or domains (besides those added with `edgeway xmpp block`): no presence, no messages, no commands. */
  blocked: z.array(jidPattern).default([]),
  presence: z.object({
    /** Readings overdue by this many usual intervals: `away`; by `xaFactor`: `xa` (extended away). */
    awayFactor: z.number().min(1).default(3),
    xaFactor: z.number().min(1).default(10),
  }).strict().prefault({}),
  alerts: z.object({
    /** Tell subscribers when a device goes offline (and back online), after the hold-down of `alerts.offlineHoldSeconds`. */
    offline: z.boolean().default(true),
    /** Deprecated (one release): move these to `alerts.thresholds`. Still applied, as rules of the alerts engine. */
    thresholds: z.array(threshold).default([]),
  }).strict().prefault({}),
  /** Longer chat messages are refused with a reply (bytes of the body). */
  maxMessageBytes: z.number().int().min(64).max(1024 * 1024).default(4096),
  /** How long a chat command waits for the device's answer. */
  commandTimeoutMs: z.number().int().min(100).default(15000),
  reconnectMinMs: z.number().int().min(10).default(500),
  reconnectMaxMs: z.number().int().min(100).default(30000),
  /** Telemetry to PubSub (XEP-0060): an upstream of the outbox named `upstream`. */
  pubsub: z.object({
    enabled: z.boolean().default(false),
    /** The PubSub service JID, e.g. `pubsub.example.org` (Prosody: `Component "pubsub.example.org" "pubsub"`). */
    service: z.string().min(1).optional(),
    /** Outbox cursor name (must not clash with an entry of `upstreams`). */
    upstream: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'lowercase letters, digits, - and _, at most 32 characters').default('xmpp'),
    /** Node per device; `{gateway}` and `{device}` are replaced. */
    node: z.string().min(1).default('edgeway/{gateway}/{device}'),
    /** Publish IQs in flight: the forwarder's credit. */
    maxInflight: z.number().int().min(1).max(10000).default(200),
    /** `pubsub#max_items` asked for when the gateway creates a node (the server may cap it). */
    maxItems: z.number().int().min(1).optional(),
    /** Larger readings are dead-lettered instead of published. */
    maxItemBytes: z.number().int().min(256).default(64 * 1024),
    iqTimeoutMs: z.number().int().min(100).default(15000),
  }).strict().prefault({}),
}).strict().superRefine((x, ctx) => {
  for (const [i, rule] of x.allow.entries()) {
    for (const g of rule.groups ?? []) {
      if (!(g in x.groups)) ctx.addIssue({ code: 'custom', path: ['allow', i, 'groups'], message: `unknown group "${g}" (define it under xmpp.groups)` })
    }
  }
  if (!x.enabled) return
  if (x.mode === 'component' && (!x.component.domain || !x.component.secret)) {
    ctx.addIssue({ code: 'custom', path: ['component'], message: 'component mode needs component.domain and component.secret' })
  }
  if (x.mode === 'client' && (!x.client.jid || x.client.password === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['client'], message: 'client mode needs client.jid and client.password' })
  }
  if (x.pubsub.enabled && !x.pubsub.service) {
    ctx.addIssue({ code: 'custom', path: ['pubsub', 'service'], message: 'pubsub needs the service JID, e.g. pubsub.example.org' })
  }
  if (x.reconnectMaxMs < x.reconnectMinMs) {
    ctx.addIssue({ code: 'custom', path: ['reconnectMaxMs'], message: 'reconnectMaxMs must be >= reconnectMinMs' })
  }
})

export type XmppConfig = z.infer<typeof xmppSection>
