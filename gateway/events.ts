// In-process events the dashboard, metrics and bridges listen to; they never sit in the data path.
import { EventEmitter } from 'node:events'
import type { Metrics } from './readings.ts'
import type { AlertEvent } from './alerts/rules.ts'
import type { CommandResult } from './commands/router.ts'

export interface GatewayEvents {
  deviceOnline: [{ device: string; link: string; clientId: string }]
  deviceOffline: [{ device: string; link: string; clientId: string; reason: string }]
  /** A device's newest stored reading (at most a few per second per device: the outbox coalesces them). */
  reading: [{ device: string; link: string; ts: number; seq: number | null; metrics: Metrics }]
  /** A device reported its running firmware (MQTT `devices/<id>/state`); healthy is null when it did not say. */
  firmware: [{ device: string; version: string; healthy: boolean | null }]
  refusal: [{ reason: string; detail: string; device?: string; clientId?: string }]
  /** The alerts engine (gateway/alerts/) raised or cleared an alert: once per transition, never per evaluation. */
  alertRaised: [AlertEvent]
  alertCleared: [AlertEvent]
  /** A command got its one result (routing errors included), with how long it took; the device journal records it. */
  commandDone: [{ args: unknown; result: CommandResult; latencyMs: number }]
}

export class GatewayBus extends EventEmitter<GatewayEvents> {
  constructor(private readonly onListenerError: (err: unknown, event: string) => void = () => undefined) {
    super({ captureRejections: false })
    this.setMaxListeners(0)
  }

  /** A failing listener is reported to onListenerError (logged), never allowed to break the emitter. */
  safeEmit<K extends keyof GatewayEvents>(event: K, ...args: GatewayEvents[K]): void {
    for (const l of this.listeners(event) as ((...a: GatewayEvents[K]) => void)[]) {
      try { l(...args) } catch (err) { this.onListenerError(err, event) }
    }
  }
}
