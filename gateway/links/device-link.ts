// The device-link seam: what the core needs of every way devices reach the gateway (the MQTT broker, a serial
// board, a Firmata board), so commands, presence and the device list go through one interface instead of a
// hand-written list in main.ts. A link kind is one folder implementing DeviceLink plus one line of wiring.

/** A command as a link receives it: the router's id (to correlate the answer), its name and arguments. */
export interface LinkCommand {
  id: string
  name: string
  args: unknown
  /** ms since epoch after which the answer is no longer awaited: a link that queues (MQTT 5) lets it expire then. */
  expiresAt?: number
}

/**
 * What sending a command gave: the device's answer at once (a serial COMMAND_RESULT, a Firmata actuator), or
 * only that it went out, the answer coming later through CommandRouter.handleResult (MQTT's result topic). Without
 * `delivered` it was written to the device's connection; with it, the link holds it for an offline device (an MQTT
 * persistent session) and `delivered` resolves true once the device has it, false when the link gave up (its expiry).
 */
export type LinkCommandOutcome =
  | { kind: 'answered'; ok: true; result: unknown }
  | { kind: 'answered'; ok: false; error: string }
  | { kind: 'sent'; delivered?: Promise<boolean> }

export interface DeviceLink {
  /** `mqtt`, `serial`, `firmata`: the link named in presence events, metrics and the registry. */
  readonly kind: string
  /** Whether this link is the way to the device now (a configured board; for MQTT, any other device). */
  serves(device: string): boolean
  isOnline(device: string): boolean
  /** The devices this link knows of without the registry: configured boards, connected MQTT devices. */
  devices(): string[]
  command(device: string, cmd: LinkCommand): Promise<LinkCommandOutcome>
  /** Links that can hold a command for an offline device (MQTT: a persistent session subscribed to it) say so here. */
  queues?(device: string, name: string): Promise<boolean>
}

/** Every link in order of precedence: a device goes to the first link that serves it (boards before MQTT). */
export class DeviceLinks {
  constructor(private readonly links: readonly DeviceLink[]) {}

  linkOf(device: string): DeviceLink | undefined { return this.links.find((l) => l.serves(device)) }
  isOnline(device: string): boolean { return this.links.some((l) => l.isOnline(device)) }
  /** Every device some link knows of, each once. */
  devices(): string[] { return [...new Set(this.links.flatMap((l) => l.devices()))] }
  /** The link a device is online on now (the first, by precedence), else null. */
  onlineLink(device: string): string | null { return this.links.find((l) => l.isOnline(device))?.kind ?? null }

  /** Whether the device's link would hold this command until the device is back. */
  async queues(device: string, name: string): Promise<boolean> {
    return (await this.linkOf(device)?.queues?.(device, name)) ?? false
  }

  command(device: string, cmd: LinkCommand): Promise<LinkCommandOutcome> {
    const link = this.linkOf(device)
    if (!link) return Promise.reject(new Error(`no device link serves "${device}"`))
    return link.command(device, cmd)
  }
}
