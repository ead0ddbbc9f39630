// The built-in mqtt upstream: republishes readings to a remote MQTT broker, each settled by its PUBACK/PUBCOMP.
// The one product file that imports MQTT.js.
import mqtt, { ReasonCodes, type MqttClient, type IClientOptions } from 'mqtt'
import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import type { MqttUpstreamConfig } from '../config/sections.ts'
import type { ClaimedRow } from '../outbox/types.ts'
import type { Outcome, Upstream, UpstreamStatus } from './types.ts'
import { hex, publishOutcome, publishPacketBytes, readingToMqtt, type MqttAckLike } from './mqtt-map.ts'
import { LinkState } from './link-state.ts'
import { redactUrl } from '../log.ts'

/** CONNACK codes of a broker that does not speak the version asked for (3.1.1's 0x01, MQTT 5's 0x84). */
const UNSUPPORTED_VERSION = new Set([0x01, 0x84])

/** Longest a connect attempt (TCP, TLS, CONNECT until CONNACK) may take; shorter once a setup time is known (link-state.ts). */
const CONNECT_TIMEOUT_MS = 10_000

export class MqttUpstream implements Upstream {
  readonly name: string
  private client: MqttClient | null = null
  private inflight = 0
  /** MQTT 5: the broker's Receive Maximum from its CONNACK (how many QoS 1/2 publishes it takes unanswered). */
  private receiveMaximum = Infinity
  /** The largest packet the broker takes (bytes) and where that comes from, for the dead letter's reason. */
  private packetLimit: { bytes: number; from: string } | null = null
  private closed = false
  private connectTimer: NodeJS.Timeout | null = null
  private readonly link: LinkState
  /** The URL as logs and status show it (a password in it as ***). */
  private readonly shownUrl: string

  constructor(private readonly cfg: MqttUpstreamConfig, private readonly gatewayId: string, private readonly log: Logger) {
    this.name = cfg.name
    this.shownUrl = redactUrl(cfg.url)
    // `log` carries { upstream: name } already (main.ts): repeating it here would write the key twice
    this.link = new LinkState(log, { url: this.shownUrl }, cfg.reconnectMinMs, cfg.reconnectMaxMs)
  }

  async start(): Promise<void> {
    this.connect()
  }

  status(): UpstreamStatus { return this.link.status() }
  credit(): number { return this.link.connected ? Math.max(0, Math.min(this.cfg.maxInflight, this.receiveMaximum) - this.inflight) : 0 }
  onChange(listener: () => void): void { this.link.onChange(listener) }

  deliver(rows: ClaimedRow[], settle: (rowId: number, outcome: Outcome, detail?: string) => void): void {
    const client = this.client
    for (const row of rows) {
      if (!client || !this.link.connected) return // unsettled: released by the forwarder on the state change
      const m = readingToMqtt(row, { topicPrefix: this.cfg.topicPrefix, gateway: this.gatewayId, protocolVersion: this.cfg.protocolVersion })
      const limit = this.packetLimit
      if (limit) {
        // A broker closes the link on a packet over its limit (MQTT 5.0 3.2.2.3.6: the client must not send it), and
        // the row went again after every reconnect, ahead of all the others: refuse it here instead.
        const bytes = publishPacketBytes(m, this.cfg.qos)
        if (bytes > limit.bytes) {
          settle(row.rowId, 'rejected', `PUBLISH of ${bytes} bytes exceeds the broker's Maximum Packet Size ${limit.bytes} (${limit.from})`)
          continue
        }
      }
      this.inflight++
      let answered = false
      client.publish(m.topic, m.payload, { qos: this.cfg.qos, ...(m.properties ? { properties: m.properties } : {}) }, (err, packet) => {
        // Older MQTT.js versions called back twice on a refused PUBACK: one settle per row, whatever the library does.
        if (answered) return
        answered = true
        if (this.client === client) this.inflight--
        const r = publishOutcome(err, packet as MqttAckLike | undefined)
        // unsettled: the connection went away before the ack; the forwarder releases the row with the link.
        if (r.outcome === 'accepted') settle(row.rowId, 'accepted')
        else if (r.outcome === 'rejected') settle(row.rowId, 'rejected', r.detail)
        this.link.emit()
      })
    }
  }

  async close(): Promise<void> {
    this.closed = true
    this.link.cancelRetry()
    this.clearConnectTimer()
    const c = this.client
    this.client = null
    if (c) await c.endAsync(true).catch(() => undefined)
    this.link.down(() => undefined, true)
  }

  private connect(): void {
    if (this.closed) return
    const cfg = this.cfg
    const timeoutMs = this.link.beginAttempt(CONNECT_TIMEOUT_MS)
    // A fresh client per attempt, no automatic reconnect or resend: the outbox owns what gets resent.
    const opts: IClientOptions = {
      clientId: cfg.clientId ?? `edgeway-${this.gatewayId}-${cfg.name}`,
      clean: true,
      reconnectPeriod: 0,
      // MQTT.js's own CONNACK timer is only a backstop: the attempt timer below abandons a hanging attempt.
      connectTimeout: CONNECT_TIMEOUT_MS + 1000,
      keepalive: 30,
      protocolVersion: cfg.protocolVersion,
      ...(cfg.username !== undefined ? { username: cfg.username } : {}),
      ...(cfg.password !== undefined ? { password: cfg.password } : {}),
      ...(cfg.ca ? { ca: readFileSync(cfg.ca) } : {}),
    }
    const client = mqtt.connect(cfg.url, opts)
    this.client = client
    this.inflight = 0
    this.receiveMaximum = Infinity
    this.packetLimit = this.limitOf(undefined)
    this.clearConnectTimer()
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null
      if (this.client !== client || client.connected) return
      this.link.attemptTimedOut(`no CONNACK within ${timeoutMs} ms`)
      this.down(client)
    }, timeoutMs)
    client.on('connect', (connack) => {
      if (this.client !== client) return
      this.clearConnectTimer()
      const receiveMaximum = cfg.protocolVersion === 5 ? connack.properties?.receiveMaximum : undefined
      // MQTT.js does not hold publishes back to the broker's Receive Maximum: the credit does (Mosquitto 2.0 drops a
      // client that goes over it, and every reading in flight went again after each reconnect).
      if (receiveMaximum !== undefined) this.receiveMaximum = receiveMaximum
      const maximumPacketSize = cfg.protocolVersion === 5 ? connack.properties?.maximumPacketSize : undefined
      this.packetLimit = this.limitOf(maximumPacketSize)
      // The broker answered a CONNACK of the version asked for: that version is the one spoken on this link.
      this.log.info({
        url: this.shownUrl, protocolVersion: cfg.protocolVersion,
        ...(receiveMaximum !== undefined ? { receiveMaximum } : {}), ...(maximumPacketSize !== undefined ? { maximumPacketSize } : {}),
      }, 'upstream connected')
      this.link.up()
    })
    client.on('error', (err) => {
      if (this.client !== client) return
      const code = (err as Error & { code?: unknown }).code
      const unsupported = !client.connected && typeof code === 'number' && UNSUPPORTED_VERSION.has(code)
      this.link.noteError(unsupported && cfg.protocolVersion === 5
        ? `${err.message} (CONNACK ${hex(code)}): the broker does not speak MQTT 5; set protocolVersion: 4 on upstream "${cfg.name}"`
        : err.message)
      // A failed connect attempt may report only 'error': treat it as down so the retry is always scheduled.
      if (!client.connected) this.down(client)
    })
    // MQTT 5: a broker that ends the link says why first (e.g. 0x93 Receive Maximum exceeded, 0x8B shutting down).
    client.on('disconnect', (p) => {
      if (this.client !== client) return
      const code = p.reasonCode ?? 0
      const why = p.properties?.reasonString
      this.link.noteError(`the broker sent DISCONNECT ${hex(code)} ${ReasonCodes[code as keyof typeof ReasonCodes] ?? ''}${why ? `: ${why}` : ''}`.trimEnd())
    })
    client.on('close', () => this.down(client))
  }

  /** The link `client` is gone: release it and schedule the next attempt (once per client). */
  private down(client: MqttClient): void {
    if (this.client !== client) return
    this.client = null
    this.clearConnectTimer()
    client.removeAllListeners()
    client.on('error', () => undefined)
    client.end(true)
    this.link.down(() => this.connect(), this.closed)
  }

  /** The tighter of the broker's Maximum Packet Size (from this link's CONNACK) and upstream maxPacketSize. */
  private limitOf(fromBroker: number | undefined): { bytes: number; from: string } | null {
    const configured = this.cfg.maxPacketSize
    if (fromBroker !== undefined && (configured === undefined || fromBroker <= configured)) return { bytes: fromBroker, from: 'from its CONNACK' }
    return configured === undefined ? null : { bytes: configured, from: `maxPacketSize of upstream "${this.cfg.name}"` }
  }

  private clearConnectTimer(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer)
    this.connectTimer = null
  }
}
