// Telemetry intake: hand the payload to the outbox and let the broker acknowledge the device only after the commit.
// Decoding happens on the outbox worker; this file stays cheap because it runs for every publish on the broker thread.
import type { Logger } from 'pino'
import type { OutboxClient } from '../outbox/client.ts'
import type { Metrics } from '../metrics.ts'
import type { GatewayBus } from '../events.ts'

export interface IntakeDeps {
  outbox: Pick<OutboxClient, 'append' | 'onCommitted'>
  metrics: Metrics
  bus: GatewayBus
  log: Logger
  /** Tells the device why its payload was refused (devices/<id>/errors). */
  reportError: (device: string, error: { topic: string; reason: string }) => void
  touch: (device: string) => void
}

export class TelemetryIntake {
  private outboxFailing = false

  constructor(private readonly d: IntakeDeps) {
    // Per commit, not per reading: counters, last-seen and events cost once per batch.
    d.outbox.onCommitted((c) => {
      if (c.stored > 0) d.metrics.messagesIn.inc({ link: c.link ?? 'mqtt' }, c.stored)
      d.metrics.commitSeconds.observe(c.latencyMs / 1000)
      for (const device of c.devices) {
        d.touch(device)
        if (d.bus.listenerCount('reading') > 0) d.bus.safeEmit('reading', { device, link: c.link ?? 'mqtt' })
      }
      if (this.outboxFailing) {
        this.outboxFailing = false
        d.log.info('outbox writes succeed again: acknowledging readings')
      }
    })
  }

  /**
   * `done(null)` lets aedes send PUBACK/PUBREC (or deliver QoS 0); it runs only after the commit.
   * `done(err)` closes the device's connection without an ack, so it retries later.
   */
  handle(device: string, topic: string, payload: Buffer, done: (err: Error | null) => void): void {
    this.d.outbox.append({ device, link: 'mqtt', payload }, (err, refused) => {
      if (err) {
        if (!this.outboxFailing) {
          this.outboxFailing = true
          this.d.log.error({ err: err.message, device }, 'outbox write failed: withholding acks, devices will retry')
        }
        this.d.metrics.refusals.inc({ reason: 'outbox_unavailable' })
        done(err)
        return
      }
      if (refused !== undefined) {
        // Acked so the device does not resend an unreadable payload forever; it learns why on its errors topic.
        this.d.metrics.refusals.inc({ reason: 'decode' })
        this.d.log.warn({ device, topic, reason: refused, bytes: payload.length }, 'telemetry refused: payload does not decode')
        this.d.bus.safeEmit('refusal', { reason: 'decode', detail: refused, device })
        this.d.reportError(device, { topic, reason: refused })
      }
      done(null)
    })
  }
}
