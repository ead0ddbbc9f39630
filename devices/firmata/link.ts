// Firmata DeviceLink: a StandardFirmata board becomes a registry device. Its sensors' values go into the outbox as
// one reading every reportIntervalMs (and at once when a button changes); actuator commands come down from the
// command router. Presence follows the port; a lost port or a board that never answers is retried with backoff.
import type { Logger } from 'pino'
import type { RawReading } from '../../gateway/readings.ts'
import type { GatewayBus } from '../../gateway/events.ts'
import { PortLink, PortLinks } from '../port-link.ts'
import { resolvePortPath, type ListPorts, type OpenPort } from '../serial/port.ts'
import type { FirmataBoardConfig } from './config.ts'
import type { ConnectedBoard } from './board.ts'
import { toActuatorAction } from './commands.ts'
import { SerialTransport } from './transport.ts'
import { reportPresence } from '../../gateway/links/presence.ts'
import type { LinkCommand, LinkCommandOutcome } from '../../gateway/links/device-link.ts'

export const FIRMATA_LINK = 'firmata'

export interface FirmataLinkDeps {
  outbox: { append(raw: RawReading, done: (err: Error | null, refused?: string) => void): void }
  registry: { setOnline(id: string, online: boolean, link: string): void; setFirmware(id: string, version: string): void }
  bus: GatewayBus
  log: Logger
  openPort?: OpenPort
  /** The present ports, for a board given by USB identity (default: SerialPort.list()). */
  listPorts?: ListPorts
}

export interface FirmataLinkStatus {
  device: string; path: string; online: boolean; firmware: string | null; readings: number; reopens: number
  /** Times the board became ready (a flasher waits for the next one to learn the new firmware). */
  hellos: number
}

export type ActuatorResult = { ok: true; result: { actuator: string; state: number } } | { ok: false; error: string }

export class FirmataLink extends PortLink<FirmataBoardConfig> {
  private transport: SerialTransport | null = null
  private board: ConnectedBoard | null = null
  private reportTimer: NodeJS.Timeout | null = null
  private silenceTimer: NodeJS.Timeout | null = null
  private firmware: string | null = null
  private readings = 0
  private hellos = 0

  constructor(config: FirmataBoardConfig, private readonly d: FirmataLinkDeps) {
    super(config, FIRMATA_LINK, d.log)
  }

  status(): FirmataLinkStatus {
    return { device: this.config.device, path: this.config.path, online: this.board !== null, firmware: this.firmware, readings: this.readings, reopens: this.reopener.count, hellos: this.hellos }
  }

  /** A routed command: its name is an actuator's name. */
  command(name: string, args: unknown): ActuatorResult {
    const m = toActuatorAction(this.config.actuators, name, args)
    if (!m.ok) return m
    if (!this.board) return { ok: false, error: `${this.config.device} is not connected` }
    const state = this.board.actuate(m.actuator.name, m.action)
    this.log.info({ actuator: m.actuator.name, action: m.action, state }, 'actuator set')
    this.report() // the new state goes upstream at once
    return { ok: true, result: { actuator: m.actuator.name, state } }
  }

  protected async open(): Promise<void> {
    if (this.stopped) return
    // johnny-five is large: a gateway without Firmata boards never loads it.
    const { connectBoard } = await import('./board.ts')
    if (this.stopped) return
    // looked up at every (re)open: a replugged board may come back under another ttyACM/ttyUSB name
    const found = await resolvePortPath(this.config, this.d.listPorts)
    if (!found.ok) { this.notReachable(new Error(found.error)); return }
    if (this.stopped) return
    const path = this.openPath = found.path
    const t = new SerialTransport(path, this.config.baudRate, this.d.openPort)
    this.transport = t
    const opened = new Promise<void>((resolve, reject) => { t.once('open', resolve); t.once('error', reject) })
    const boardP = connectBoard(this.config, t)
    boardP.catch(() => undefined)
    try {
      // A port that cannot be opened rejects `opened` (our 'error' listener runs first); firmata-io then re-emits the
      // error on its io, which has no listener before ready, so the emit throws out of open(): that rejection was
      // unhandled and ended the gateway whenever a board's port was missing.
      t.open().catch(() => undefined)
      await opened
      const board = await boardP
      if (this.stopped || this.transport !== t) { await t.close(); return }
      this.board = board
      t.on('close', () => { if (this.transport === t) this.lost(new Error('port closed')) })
      t.on('error', (err: Error) => { if (this.transport === t) this.lost(err) })
      this.reopener.opened()
      this.firmware = board.firmware
      this.hellos++
      board.onChange(() => this.report())
      reportPresence({ ...this.d, log: this.log }, { device: this.config.device, link: FIRMATA_LINK, clientId: this.config.path, online: true })
      try { this.d.registry.setFirmware(this.config.device, board.firmware) } catch (err) { this.log.warn({ err: (err as Error).message }, 'registry update failed') }
      this.d.bus.safeEmit('firmware', { device: this.config.device, version: board.firmware, healthy: null })
      this.log.info({ firmware: board.firmware, sensors: this.config.sensors.length, actuators: this.config.actuators.length }, 'firmata board ready')
      this.reportTimer = setInterval(() => this.report(), this.config.reportIntervalMs)
      this.reportTimer.unref()
      this.watchSilence(t, board)
    } catch (err) {
      await t.close()
      if (this.transport === t) this.transport = null
      this.notReachable(err as Error)
    }
  }

  private notReachable(err: Error): void {
    if (this.stopped) return
    const { delayMs, first } = this.reopener.failed()
    if (first) this.log.warn({ err: err.message, retryMs: delayMs }, 'firmata board not reachable: retrying with backoff')
    else this.log.debug({ err: err.message, retryMs: delayMs }, 'firmata board still not reachable')
  }

  /** A board that stops talking while its port stays open (hung MCU, USB adapter still plugged in) is lost too:
   *  quiet for half the timeout, it is asked for its version; quiet for all of it, the port is closed and reopened. */
  private watchSilence(t: SerialTransport, board: ConnectedBoard): void {
    const limit = this.config.silenceTimeoutMs
    const tick = Math.max(50, Math.floor(limit / 4))
    t.lastDataAt = Math.max(t.lastDataAt, Date.now())
    let probedAt = 0
    this.silenceTimer = setInterval(() => {
      if (this.transport !== t) return
      const now = Date.now()
      const quiet = now - t.lastDataAt
      if (quiet < limit / 2) return
      // Lost only when a probe went out a tick ago and nothing came back: after a stalled event loop the timer runs
      // before the poll phase has read what the board sent meanwhile.
      if (quiet >= limit && probedAt > t.lastDataAt && now - probedAt >= tick) {
        this.lost(new Error(`no data from the board for ${quiet} ms (silenceTimeoutMs ${limit}): hung, reset or unpowered`))
        return
      }
      if (probedAt <= t.lastDataAt || now - probedAt >= limit / 2) { probedAt = now; board.probe() }
    }, tick)
    this.silenceTimer.unref()
  }

  private lost(err: Error): void {
    this.log.warn({ err: err.message }, 'firmata port lost: board unplugged or gone; reopening with backoff')
    this.close('port lost').then(
      () => this.reopener.lost(),
      (e: Error) => { this.log.error({ err: e.message }, 'firmata link teardown failed; reopening anyway'); this.reopener.lost() },
    )
  }

  protected async close(reason: string): Promise<void> {
    if (this.reportTimer) clearInterval(this.reportTimer)
    if (this.silenceTimer) clearInterval(this.silenceTimer)
    this.reportTimer = this.silenceTimer = null
    const t = this.transport
    this.transport = null
    const wasOnline = this.board !== null
    // the board's timers are johnny-five's: a throw there must not keep the device "online"
    try { this.board?.close() } catch (e) { this.log.warn({ err: (e as Error).message }, 'firmata board close failed') }
    this.board = null
    if (wasOnline) this.markOffline(reason)
    if (t) await t.close()
  }

  private markOffline(reason: string): void {
    reportPresence({ ...this.d, log: this.log }, { device: this.config.device, link: FIRMATA_LINK, clientId: this.config.path, online: false, reason, message: 'firmata board offline' })
  }

  /** One reading with every value that has one (a sensor not sampled yet is left out). */
  private report(): void {
    const b = this.board
    if (!b) return
    const metrics: Record<string, number> = {}
    for (const [k, v] of Object.entries(b.values())) if (v !== null && Number.isFinite(v)) metrics[k] = v
    if (Object.keys(metrics).length === 0) return
    this.d.outbox.append({ device: this.config.device, link: FIRMATA_LINK, payload: Buffer.from(JSON.stringify(metrics)) }, (err, refused) => {
      // Firmata has no acknowledgements: a reading that cannot be stored now is replaced by the next sample.
      if (err) this.log.error({ err: err.message }, 'outbox write failed: this sample is lost (the next one follows)')
      else if (refused !== undefined) this.log.warn({ reason: refused }, 'firmata reading refused')
      else this.readings++
    })
  }
}

/** All configured Firmata boards; the Firmata DeviceLink (a command's name is an actuator's, it acts at once). */
export class FirmataLinks extends PortLinks<FirmataLink> {
  readonly kind = FIRMATA_LINK
  constructor(boards: FirmataBoardConfig[], deps: FirmataLinkDeps) { super(boards.map((b) => new FirmataLink(b, deps))) }

  /** A command's name is an actuator's; the board answers at once. */
  protected async send(board: FirmataLink, cmd: LinkCommand): Promise<LinkCommandOutcome> {
    const r = board.command(cmd.name, cmd.args)
    return r.ok ? { kind: 'answered', ok: true, result: r.result } : { kind: 'answered', ok: false, error: r.error }
  }
}
