// The MQTT side as a DeviceLink: every device not served by a board link, commands published to
// `devices/<id>/cmd/<name>` as `{"id", "args"}` (QoS 1), the answer coming back on `.../result` (the broker's
// onCommandResult hook hands it to CommandRouter.handleResult). MQTT 5: a command carries its Message Expiry Interval
// (what is left of its deadline), so one queued for a device that dropped off is not delivered after the router
// already reported it expired or timed out to its sender. A device that is offline with a persistent session
// subscribed to its commands gets the command queued; it counts as delivered once the device acknowledges it
// (its PUBACK after reconnecting), so the router can tell `expired` (never delivered) from `timeout` (no answer).
import type { DeviceLink, LinkCommand, LinkCommandOutcome } from '../links/device-link.ts'
import type { MqttBroker } from './broker.ts'

export const MQTT_LINK = 'mqtt'

type BrokerSide = Pick<MqttBroker, 'isDeviceOnline' | 'connectedDevices' | 'publish'> & Partial<Pick<MqttBroker, 'queuesCommand' | 'onCommandDelivered'>>

interface Waiting { device: string; resolve: (delivered: boolean) => void; timer: NodeJS.Timeout }

export class MqttDeviceLink implements DeviceLink {
  readonly kind = MQTT_LINK
  /** Queued commands not yet acknowledged by their device, by command id. */
  private readonly waiting = new Map<string, Waiting>()
  private listening = false

  constructor(private readonly broker: BrokerSide) {}

  /** The fallback link: last in DeviceLinks, it takes every device the boards do not. */
  serves(): boolean { return true }
  isOnline(device: string): boolean { return this.broker.isDeviceOnline(device) }
  devices(): string[] { return this.broker.connectedDevices }

  queues(device: string, name: string): Promise<boolean> {
    return this.broker.queuesCommand ? this.broker.queuesCommand(device, name) : Promise.resolve(false)
  }

  async command(device: string, cmd: LinkCommand): Promise<LinkCommandOutcome> {
    const left = cmd.expiresAt === undefined ? undefined : cmd.expiresAt - Date.now()
    // rounded down: the broker drops it no later than the router reports it expired (a last second rounds up to 1 s)
    const expiry = left === undefined ? undefined : { messageExpiryInterval: Math.max(1, Math.floor(left / 1000)) }
    const online = this.broker.isDeviceOnline(device)
    // before the publish: a device that reconnects meanwhile may acknowledge it at once
    const delivered = online ? null : this.awaitDelivery(device, cmd.id, left ?? 30_000)
    try {
      await this.broker.publish(`devices/${device}/cmd/${cmd.name}`, JSON.stringify({ id: cmd.id, args: cmd.args ?? null }), 1, false, expiry)
    } catch (err) {
      this.endWait(cmd.id, false)
      throw err
    }
    return delivered ? { kind: 'sent', delivered } : { kind: 'sent' }
  }

  private awaitDelivery(device: string, id: string, ms: number): Promise<boolean> {
    if (!this.listening && this.broker.onCommandDelivered) {
      this.listening = true
      this.broker.onCommandDelivered((d, payload) => this.delivered(d, payload))
    }
    return new Promise<boolean>((resolve) => {
      // the broker drops it once its expiry passed: no acknowledgement can come after that (plus a second's rounding)
      const timer = setTimeout(() => this.endWait(id, false), ms + 1000)
      timer.unref()
      this.waiting.set(id, { device, resolve, timer })
    })
  }

  /** A device acknowledged a command publish: the one of a waiting command, if its id is in the payload. */
  private delivered(device: string, payload: Buffer): void {
    if (this.waiting.size === 0) return
    let id: unknown
    try { id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id } catch { return }
    if (typeof id !== 'string') return
    if (this.waiting.get(id)?.device === device) this.endWait(id, true)
  }

  /** The wait for a queued command ends: delivered (its device acknowledged it) or not (failed publish, expiry). */
  private endWait(id: string, delivered: boolean): void {
    const w = this.waiting.get(id)
    if (!w) return
    this.waiting.delete(id)
    clearTimeout(w.timer)
    w.resolve(delivered)
  }
}
