// The MQTT side as a DeviceLink: every device not served by a board link, commands published to
// `devices/<id>/cmd/<name>` as `{"id", "args"}` (QoS 1), the answer coming back on `.../result` (the broker's
// onCommandResult hook hands it to CommandRouter.handleResult). MQTT 5: a command carries its Message Expiry Interval
// (what is left of its deadline), so one queued for a device that dropped off is not delivered after the router
// already reported it expired or timed out to its sender.
import type { DeviceLink, LinkCommand, LinkCommandOutcome } from '../links/device-link.ts'
import type { MqttBroker } from './broker.ts'

export const MQTT_LINK = 'mqtt'

export class MqttDeviceLink implements DeviceLink {
  readonly kind = MQTT_LINK
  constructor(private readonly broker: Pick<MqttBroker, 'isDeviceOnline' | 'connectedDevices' | 'publish'>) {}

  /** The fallback link: last in DeviceLinks, it takes every device the boards do not. */
  serves(): boolean { return true }
  isOnline(device: string): boolean { return this.broker.isDeviceOnline(device) }
  devices(): string[] { return this.broker.connectedDevices }

  async command(device: string, cmd: LinkCommand): Promise<LinkCommandOutcome> {
    const expiry = cmd.expiresAt === undefined ? undefined : { messageExpiryInterval: Math.max(1, Math.ceil((cmd.expiresAt - Date.now()) / 1000)) }
    await this.broker.publish(`devices/${device}/cmd/${cmd.name}`, JSON.stringify({ id: cmd.id, args: cmd.args ?? null }), 1, false, expiry)
    return { kind: 'sent' }
  }
}
