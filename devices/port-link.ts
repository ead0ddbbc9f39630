// What the serial and Firmata links share: a board on a port that is opened, lost and reopened with backoff, and
// released for a flasher (pause/resume); and the collection of such links that is one DeviceLink. Each kind says
// how it opens its port, how it closes it (reporting the board offline) and how a command is sent.
import type { Logger } from 'pino'
import { Reopener } from './reopen.ts'
import { knownPortPath } from './serial/port.ts'
import type { UsbMatch } from './serial/usb.ts'
import type { DeviceLink, LinkCommand, LinkCommandOutcome } from '../gateway/links/device-link.ts'

export interface PortLinkConfig {
  device: string
  path: string
  usb?: UsbMatch | undefined
  reopenMinMs: number
  reopenMaxMs: number
}

export abstract class PortLink<C extends PortLinkConfig = PortLinkConfig> {
  /** Stopped or paused: nothing is opened or scheduled. */
  protected stopped = true
  /** The device path last opened (for a port configured by USB identity, where it was found). */
  protected openPath: string | null = null
  protected readonly reopener: Reopener
  protected readonly log: Logger

  constructor(readonly config: C, private readonly kind: string, log: Logger) {
    this.reopener = new Reopener(config.reopenMinMs, config.reopenMaxMs, () => void this.open(), () => this.stopped)
    this.log = log.child({ link: kind, device: config.device, port: config.path })
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    void this.open()
  }

  async stop(reason = 'gateway stopping'): Promise<void> {
    this.stopped = true
    this.reopener.cancel()
    await this.close(reason)
  }

  /** Lets another program use the port (a flasher): closes it and keeps it closed until resume(). */
  async pause(reason: string): Promise<void> {
    if (this.stopped) return
    this.log.info({ reason }, `${this.kind} link paused: port released`)
    await this.stop(reason)
  }

  /** Reopens after pause(); the board's greeting then records its (new) firmware version. */
  resume(): void {
    if (!this.stopped) return
    this.log.info(`${this.kind} link resumed`)
    this.reopener.reset()
    this.start()
  }

  get paused(): boolean { return this.stopped }

  /** Where the board's port really is (a board given by USB identity): the flasher matches it. */
  get devicePath(): string | null { return knownPortPath(this.config, this.openPath) }

  abstract status(): { online: boolean }

  /** Opens the port (when not stopped); a failure or a later loss goes to the reopener. */
  protected abstract open(): Promise<void>

  /** Closes the port and reports the board offline (with the reason); answers what waits on it. */
  protected abstract close(reason: string): Promise<void>
}

/** The configured boards of one kind, as one DeviceLink: a board's id is its own. */
export abstract class PortLinks<L extends PortLink> implements DeviceLink {
  abstract readonly kind: string
  constructor(readonly links: L[]) {}

  serves(device: string): boolean { return this.byDevice(device) !== undefined }
  isOnline(device: string): boolean { return this.byDevice(device)?.status().online ?? false }
  devices(): string[] { return this.links.map((l) => l.config.device) }
  start(): void { for (const l of this.links) l.start() }
  async stop(): Promise<void> { await Promise.all(this.links.map((l) => l.stop())) }
  byDevice(device: string): L | undefined { return this.links.find((l) => l.config.device === device) }
  byPath(path: string): L | undefined { return this.links.find((l) => l.config.path === path) }

  async command(device: string, cmd: LinkCommand): Promise<LinkCommandOutcome> {
    const link = this.byDevice(device)
    if (!link) throw new Error(`no ${this.kind} board "${device}"`)
    return this.send(link, cmd)
  }

  /** The routed command in the board's own terms; the board's answer is the outcome. */
  protected abstract send(link: L, cmd: LinkCommand): Promise<LinkCommandOutcome>
}
