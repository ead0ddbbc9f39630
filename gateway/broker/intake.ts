// Telemetry intake: hand the payload to the outbox and let the broker acknowledge the device only after the commit.
// Decoding happens on the outbox worker; this file stays cheap because it runs for every publish on the broker thread.
import type { Logger } from 'pino'
import type { OutboxClient } from '../outbox/client.ts'
import type { Metrics } from '../metrics.ts'
import type { GatewayBus } from '../events.ts'
import type { AppendOwner } from '../outbox/types.ts'
import type { RefusalLog } from '../log/refusals.ts'

export interface IntakeDeps {
  outbox: Pick<OutboxClient, 'append' | 'appendOwned' | 'onCommitted' | 'onRefused' | 'onAppendFailed'>
  metrics: Metrics
  bus: GatewayBus
  log: Logger
  /** Refusal lines, a first one per device at once and repeats summed up (a flood writes a few lines). */
  refusals: Pick<RefusalLog, 'note'>
  /** Tells the device why its payload was refused (devices/<id>/errors). */
  reportError: (device: string, error: { topic: string; reason: string }) => void
}

export class TelemetryIntake {
  private outboxFailing = false

  constructor(private readonly d: IntakeDeps) {
    // Bookkeeping happens per commit and per refusal, not in a closure per reading: this path runs for every publish.
    // (Counting stored readings per link is main.ts's job: it is the same for every link.)
    d.outbox.onCommitted(() => {
      if (this.outboxFailing) {
        this.outboxFailing = false
        d.log.info('outbox writes succeed again: acknowledging readings')
      }
    })
    d.outbox.onRefused(({ device, link, reason }) => {
      if (link !== 'mqtt') return
      // Acked so the device does not resend an unreadable payload forever; it learns why on its errors topic.
      const topic = `devices/${device}/telemetry`
      d.metrics.refusals.inc({ reason: 'decode' })
      d.refusals.note('decode', device, reason, { device, topic, reason }, 'telemetry refused: payload does not decode')
      d.bus.safeEmit('refusal', { reason: 'decode', detail: reason, device })
      d.reportError(device, { topic, reason })
    })
    d.outbox.onAppendFailed((err, count) => {
      d.metrics.refusals.inc({ reason: 'outbox_unavailable' }, count)
      // A full disk has its own line (main.ts, once per spell); this one is for the other write failures.
      if (!this.outboxFailing && err.code !== 'disk_full') {
        this.outboxFailing = true
        d.log.error({ err: err.message }, 'outbox write failed: withholding acks, devices will retry')
      }
    })
  }

  /**
   * `done(null)` lets aedes send PUBACK/PUBREC (or deliver QoS 0); it runs only after the commit (or, for a payload
   * that does not decode, after the worker refused it). `done(err)` closes the connection without an ack: the
   * device retries later.
   */
  handle(device: string, payload: Buffer, done: (err: Error | null) => void, userProperties?: string): void {
    this.d.outbox.append(userProperties === undefined ? { device, link: 'mqtt', payload } : { device, link: 'mqtt', payload, userProperties }, done)
  }

  /** A publish refused before the outbox (e.g. its user properties): the device learns why on its errors topic. */
  reportRefusal(device: string, topic: string, reason: string): void {
    this.d.reportError(device, { topic, reason })
  }

  /** As handle, settled through `owner` (the broker's fast path: one owner per connection). */
  handleOwned(device: string, payload: Buffer, owner: AppendOwner, tag: number): void {
    this.d.outbox.appendOwned({ device, link: 'mqtt', payload }, owner, tag)
  }
}
