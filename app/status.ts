// Health and status assembly: what /healthz, `edgeway status`, the dashboard and the upstreams' heartbeats show,
// from the outbox's statistics, the upstreams, the camera and the active alerts. Also keeps the outbox's gauges
// on /metrics current and logs a full disk once per spell. The verdict itself is pure: gateway/health.ts.
import { existsSync } from 'node:fs'
import type { Logger } from 'pino'
import type { OutboxClient } from '../gateway/outbox/client.ts'
import type { OutboxStats } from '../gateway/outbox/types.ts'
import { recoveryReasons } from '../gateway/outbox/protocol.ts'
import type { Metrics } from '../gateway/metrics.ts'
import type { AlertEngine } from '../gateway/alerts/engine.ts'
import type { CameraService } from '../gateway/camera/service.ts'
import { cameraHealthReasons } from '../gateway/camera/health.ts'
import type { Upstream } from '../gateway/upstream/types.ts'
import { evaluateHealth } from '../gateway/health.ts'

export interface StatusDeps {
  gatewayId: string
  version: string
  outboxMaxBytes: number
  diskFullHoldSeconds: number
  outbox: OutboxClient
  metrics: Metrics
  alerts: AlertEngine
  camera: CameraService
  /** Connected MQTT clients and devices (the broker). */
  mqtt: () => { clients: number; devices: number }
  upstreams: readonly Upstream[]
  log: Logger
}

export type HealthReport = Awaited<ReturnType<GatewayStatus['health']>>

export class GatewayStatus {
  private lastStats: OutboxStats | null = null
  private outboxError: string | null = null
  private diskFullLogged = false

  constructor(private readonly d: StatusDeps) {}

  /** Subscribes to the outbox's failures, drops and full-disk events (before the outbox starts). */
  watchOutbox(): void {
    const { outbox, metrics, log } = this.d
    outbox.onFailure((err) => { this.outboxError = err.message })
    outbox.onDropped((d) => {
      metrics.drops.inc({ reason: d.reason }, d.rows)
      log.warn({ reason: d.reason, rows: d.rows, bytes: d.bytes }, 'outbox retention dropped the oldest readings')
    })
    outbox.onAppendHeld((err) => this.diskFull(err))
    outbox.onAppendFailed((err) => { if (err.code === 'disk_full') this.diskFull(err) })
  }

  private diskFull(err: Error): void {
    if (this.diskFullLogged) return
    this.diskFullLogged = true
    this.d.log.error({ err: err.message, holdSeconds: this.d.diskFullHoldSeconds }, 'DISK FULL: the outbox cannot store readings; devices wait for their acks (connections stay open) while the gateway retries')
  }

  /** Fresh outbox statistics, fed to the alerts and the /metrics gauges; null (and the error kept) if unavailable. */
  async refresh(): Promise<OutboxStats | null> {
    const { outbox, metrics, alerts, log } = this.d
    try {
      const s = await outbox.stats()
      this.lastStats = s
      alerts.observeOutbox(s)
      alerts.observeOutboxRecovery(recoveryReasons(outbox.recovery, existsSync)[0] ?? null)
      metrics.outboxDepth.set(s.depth)
      metrics.outboxBytes.set(s.bytes)
      metrics.outboxFileBytes.set(s.fileBytes)
      metrics.outboxOldest.set(s.oldestAgeMs / 1000)
      metrics.outboxDiskFull.set(s.diskFull ? 1 : 0)
      if (!s.diskFull && this.diskFullLogged) { this.diskFullLogged = false; log.info('outbox writes succeed again') }
      for (const u of s.upstreams) metrics.upstreamLag.set({ upstream: u.upstream }, u.lag)
      return s
    } catch (err) {
      this.outboxError = (err as Error).message
      return null
    }
  }

  /** /healthz and `edgeway status`: the verdict with its reasons, and the figures behind it. */
  async health() {
    const { upstreams, camera, alerts } = this.d
    const stats = await this.refresh()
    const cam = camera.status()
    const now = Date.now()
    const active = alerts.active()
    return {
      ...evaluateHealth({
        outbox: stats, outboxError: this.outboxError, maxBytes: this.d.outboxMaxBytes, now,
        upstreams: upstreams.map((u) => ({ name: u.name, status: u.status() })),
        degraded: cameraHealthReasons(cam, now),
        alerts: active,
      }),
      gateway: this.d.gatewayId,
      uptimeSeconds: Math.round(process.uptime()),
      mqtt: this.d.mqtt(),
      outbox: stats && { depth: stats.depth, bytes: stats.bytes, oldestAgeSeconds: Math.round(stats.oldestAgeMs / 1000), fileBytes: stats.fileBytes, drops: stats.drops, diskFull: stats.diskFull, deadLettered: stats.deadLettered },
      upstreams: upstreams.map((u) => {
        const s = u.status()
        const c = stats?.upstreams.find((x) => x.upstream === u.name)
        return { name: u.name, connected: s.connected, since: new Date(s.since).toISOString(), lastError: s.lastError, ...(s.repliesFailed !== undefined ? { repliesFailed: s.repliesFailed } : {}),
          // amqp: the node in use (a cluster's `hosts`), bridges/amqp/upstream.ts
          ...('endpoint' in s && typeof s.endpoint === 'string' ? { endpoint: s.endpoint } : {}), lag: c?.lag ?? null, inflight: c?.inflight ?? null, ackedThrough: c?.ackedUpto ?? null }
      }),
      camera: cam,
      alerts: active,
    }
  }

  /** Heartbeat content for upstreams that publish one: the same figures /healthz shows. */
  async snapshot(): Promise<Record<string, unknown>> {
    const s = (await this.refresh()) ?? this.lastStats
    return {
      version: this.d.version,
      uptimeSeconds: Math.round(process.uptime()),
      devicesOnline: this.d.mqtt().devices,
      backlog: s && { depth: s.depth, bytes: s.bytes, oldestAgeSeconds: Math.round(s.oldestAgeMs / 1000), deadLettered: s.deadLettered },
      upstreams: this.d.upstreams.map((u) => ({ name: u.name, connected: u.status().connected, lag: s?.upstreams.find((x) => x.upstream === u.name)?.lag ?? null })),
      alerts: this.d.alerts.active(),
    }
  }
}
