// The built-in mqtt upstream: republishes readings to a remote MQTT broker, each settled by its PUBACK/PUBCOMP.
// The one product file that imports MQTT.js.
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt'
import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import type { MqttUpstreamConfig } from '../config/sections.ts'
import type { ClaimedRow } from '../outbox/types.ts'
import type { Outcome, Upstream, UpstreamStatus } from './types.ts'
import { readingToMqtt } from './mqtt-map.ts'
import { LinkState } from './link-state.ts'

/** Longest a connect attempt (TCP, TLS, CONNECT until CONNACK) may take; shorter once a setup time is known (link-state.ts). */
const CONNECT_TIMEOUT_MS = 10_000

export class MqttUpstream implements Upstream {
  readonly name: string
  private client: MqttClient | null = null
  private inflight = 0
  private closed = false
  private connectTimer: NodeJS.Timeout | null = null
  private readonly link: LinkState

  constructor(private readonly cfg: MqttUpstreamConfig, private readonly gatewayId: string, private readonly log: Logger) {
    this.name = cfg.name
    // `log` carries { upstream: name } already (main.ts): repeating it here would write the key twice
    this.link = new LinkState(log, { url: cfg.url }, cfg.reconnectMinMs, cfg.reconnectMaxMs)
  }

  async start(): Promise<void> {
    this.connect()
  }

  status(): UpstreamStatus { return this.link.status() }
  credit(): number { return this.link.connected ? Math.max(0, this.cfg.maxInflight - this.inflight) : 0 }
  onChange(listener: () => void): void { this.link.onChange(listener) }

  deliver(rows: ClaimedRow[], settle: (rowId: number, outcome: Outcome, detail?: string) => void): void {
    const client = this.client
    for (const row of rows) {
      if (!client || !this.link.connected) return // unsettled: released by the forwarder on the state change
      const m = readingToMqtt(row, this.cfg.topicPrefix)
      this.inflight++
      client.publish(m.topic, m.payload, { qos: this.cfg.qos }, (err) => {
        if (this.client === client) this.inflight--
        // An error here means the connection went away before the ack: the row stays unsettled.
        if (!err) settle(row.rowId, 'accepted')
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
      protocolVersion: 4,
      ...(cfg.username !== undefined ? { username: cfg.username } : {}),
      ...(cfg.password !== undefined ? { password: cfg.password } : {}),
      ...(cfg.ca ? { ca: readFileSync(cfg.ca) } : {}),
    }
    const client = mqtt.connect(cfg.url, opts)
    this.client = client
    this.inflight = 0
    this.clearConnectTimer()
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null
      if (this.client !== client || client.connected) return
      this.link.attemptTimedOut(`no CONNACK within ${timeoutMs} ms`)
      this.down(client)
    }, timeoutMs)
    client.on('connect', () => {
      if (this.client !== client) return
      this.clearConnectTimer()
      this.log.info({ url: cfg.url }, 'upstream connected')
      this.link.up()
    })
    client.on('error', (err) => {
      if (this.client !== client) return
      this.link.noteError(err.message)
      // A failed connect attempt may report only 'error': treat it as down so the retry is always scheduled.
      if (!client.connected) this.down(client)
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

  private clearConnectTimer(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer)
    this.connectTimer = null
  }
}
