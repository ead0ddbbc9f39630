// Telemetry intake: decode, append to the outbox, and only then let the broker acknowledge the device.
import type { Logger } from 'pino'
import type { Outbox } from '../outbox/types.ts'
import { decodeTelemetry } from '../readings.ts'
import type { Metrics } from '../metrics.ts'
import type { GatewayBus } from '../events.ts'

export interface IntakeDeps {
  outbox: Outbox
  metrics: Metrics
  bus: GatewayBus
  log: Logger
  /** Tells the device why its payload was refused (devices/<id>/errors). */
  reportError: (device: string, error: { topic: string; reason: string }) => void
  touch: (device: string) => void
}

export class TelemetryIntake {
  private outboxFailing = false
  constructor(private readonly d: IntakeDeps) {}

  /**
   * `done(null)` lets aedes send PUBACK/PUBREC (or deliver QoS 0); it runs only after the commit.
   * `done(err)` closes the device's connection without an ack, so it retries later.
   */
  handle(device: string, topic: string, payload: Buffer, done: (err: Error | null) => void): void {
    const decoded = decodeTelemetry(device, payload, Date.now(), 'mqtt')
    if (!decoded.ok) {
      // Acked so the device does not resend an unreadable payload forever; it learns why on its errors topic.
      this.d.metrics.refusals.inc({ reason: 'decode' })
      this.d.log.warn({ device, topic, reason: decoded.reason, bytes: payload.length }, 'telemetry refused: payload does not decode')
      this.d.bus.safeEmit('refusal', { reason: 'decode', detail: decoded.reason, device })
      this.d.reportError(device, { topic, reason: decoded.reason })
      done(null)
      return
    }
    const started = performance.now()
    this.d.outbox.append(decoded.reading, (err) => {
      if (err) {
        if (!this.outboxFailing) {
          this.outboxFailing = true
          this.d.log.error({ err: err.message, device }, 'outbox write failed: withholding acks, devices will retry')
        }
        this.d.metrics.refusals.inc({ reason: 'outbox_unavailable' })
        done(err)
        return
      }
      if (this.outboxFailing) {
        this.outboxFailing = false
        this.d.log.info('outbox writes succeed again: acknowledging readings')
      }
      this.d.metrics.messagesIn.inc({ link: 'mqtt' })
      this.d.metrics.commitSeconds.observe((performance.now() - started) / 1000)
      this.d.touch(device)
      this.d.bus.safeEmit('reading', { device, link: 'mqtt' })
      done(null)
    })
  }
}
