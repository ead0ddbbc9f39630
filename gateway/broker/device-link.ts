// The MQTT side as a DeviceLink: every device not served by a board link, commands published to
// `devices/<id>/cmd/<name>` as `{"id", "args"}` (QoS 1), the answer coming back on `.../result` (the broker's
// onCommandResult hook hands it to CommandRouter.handleResult).
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
    await this.broker.publish(`devices/${device}/cmd/${cmd.name}`, JSON.stringify({ id: cmd.id, args: cmd.args ?? null }), 1, false)
    return { kind: 'sent' }
  }
}
