// The built-in mqtt upstream: republishes readings to a remote MQTT broker, each settled by its PUBACK/PUBCOMP.
// The one product file that imports MQTT.js.
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt'
import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import type { MqttUpstreamConfig } from '../config/schema.ts'
import type { ClaimedRow } from '../outbox/types.ts'
import type { Outcome, Upstream, UpstreamStatus } from './types.ts'
import { readingToMqtt } from './mqtt-map.ts'
import { LinkState } from './link-state.ts'

export class MqttUpstream implements Upstream {
  readonly name: string
  private client: MqttClient | null = null
  private inflight = 0
  private closed = false
  private readonly link: LinkState

  constructor(private readonly cfg: MqttUpstreamConfig, private readonly gatewayId: string, private readonly log: Logger) {
    this.name = cfg.name
    this.link = new LinkState(log, { upstream: cfg.name, url: cfg.url }, cfg.reconnectMinMs, cfg.reconnectMaxMs)
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
    const c = this.client
    this.client = null
    if (c) await c.endAsync(true).catch(() => undefined)
    this.link.down(() => undefined, true)
  }

  private connect(): void {
    if (this.closed) return
    const cfg = this.cfg
    // A fresh client per attempt, no automatic reconnect or resend: the outbox owns what gets resent.
    const opts: IClientOptions = {
      clientId: cfg.clientId ?? `edgeway-${this.gatewayId}-${cfg.name}`,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      keepalive: 30,
      protocolVersion: 4,
      ...(cfg.username !== undefined ? { username: cfg.username } : {}),
      ...(cfg.password !== undefined ? { password: cfg.password } : {}),
      ...(cfg.ca ? { ca: readFileSync(cfg.ca) } : {}),
    }
    const client = mqtt.connect(cfg.url, opts)
    this.client = client
    this.inflight = 0
    client.on('connect', () => {
      if (this.client !== client) return
      this.log.info({ upstream: this.name, url: cfg.url }, 'upstream connected')
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
    client.removeAllListeners()
    client.on('error', () => undefined)
    client.end(true)
    this.link.down(() => this.connect(), this.closed)
  }
}
