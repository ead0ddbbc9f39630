// What a device reports on its own topics besides telemetry, routed to whoever handles it: its retained `state`
// (the firmware version, for the registry and OTA), its command results and deliveries (the command router), its OTA
// requests and status (the OTA service). The broker calls route() once a publish passed the ACL, and delivered() when
// a device acknowledged a command; a listener that throws is logged, never the broker's problem.
import type { Logger } from 'pino'
import type { GatewayBus } from '../events.ts'
import type { Registry } from '../registry/registry.ts'
import { parseFirmwareReport } from '../ota/protocol.ts'
import type { ClassifiedTopic } from './policy.ts'

export type CommandResultListener = (device: string, name: string, payload: Buffer) => void
export type OtaUplinkListener = (device: string, kind: 'request' | 'status', payload: Buffer) => void
export type CommandDeliveredListener = (device: string, payload: Buffer) => void

export class DeviceUplinks {
  private commandResult: CommandResultListener | null = null
  private otaUplink: OtaUplinkListener | null = null
  private commandDelivered: CommandDeliveredListener | null = null

  constructor(private readonly d: { registry: Pick<Registry, 'setFirmware'>; bus: GatewayBus; log: Logger }) {}

  onCommandResult(listener: CommandResultListener): void { this.commandResult = listener }
  onOtaUplink(listener: OtaUplinkListener): void { this.otaUplink = listener }
  onCommandDelivered(listener: CommandDeliveredListener): void { this.commandDelivered = listener }

  /**
   * A publish the ACL allowed on a device topic. `self`: the publisher is that device (an integration client's
   * publish is never the device's report); `registered`: a registered device, whose firmware the registry keeps.
   */
  route(t: ClassifiedTopic, payload: Buffer, self: boolean, registered: boolean): void {
    if (!self) return
    switch (t.kind) {
      case 'state': if (registered) this.noteState(t.device, payload); return
      case 'cmd_result': this.call('command result', t.device, () => this.commandResult?.(t.device, t.rest.split('/')[1]!, payload)); return
      case 'ota_request': this.call('ota', t.device, () => this.otaUplink?.(t.device, 'request', payload)); return
      case 'ota_status': this.call('ota', t.device, () => this.otaUplink?.(t.device, 'status', payload)); return
      default:
    }
  }

  /** The device acknowledged (PUBACK/PUBREC) a publish on its own `devices/<id>/cmd/...`: the command is delivered. */
  delivered(device: string, payload: Buffer): void {
    this.call('command delivery', device, () => this.commandDelivered?.(device, payload))
  }

  get wantsDeliveries(): boolean { return this.commandDelivered !== null }

  /** A retained state message may carry the firmware version (and health, for OTA): the registry keeps the version. */
  private noteState(device: string, payload: Buffer): void {
    if (payload[0] !== 0x7b) return
    // state is free-form; only the firmware and healthy fields are read
    const fw = parseFirmwareReport(payload)
    if (!fw) return
    this.d.registry.setFirmware(device, fw.version)
    this.d.bus.safeEmit('firmware', { device, version: fw.version, healthy: fw.healthy })
  }

  private call(what: string, device: string, fn: () => void): void {
    try { fn() } catch (err) { this.d.log.error({ device, err: (err as Error).message }, `${what} listener failed`) }
  }
}
