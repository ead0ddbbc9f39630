// Serial DeviceLink: one board on one port. Frames in -> readings into the outbox -> ACK only after the durable
// commit; HELLO -> firmware version in the registry; presence follows the port and the board's liveness; the port is
// reopened with backoff whenever it vanishes. Commands go down as COMMAND frames and wait for COMMAND_RESULT.
import type { Logger } from 'pino'
import type { RawReading } from '../../gateway/readings.ts'
import type { GatewayBus } from '../../gateway/events.ts'
import { PortLink, PortLinks } from '../port-link.ts'
import {
  CobsDecoder, CommandStatus, FrameType, JsonLineDecoder, decodeReadingPayload, encodeCommand, encodeFrame, frameTypeName,
  type Frame, type FramingStats, type SerialCommand,
} from './framing.ts'
import { openSerialPort, resolvePortPath, type ListPorts, type OpenPort, type PortHandle } from './port.ts'
import type { UsbMatch } from './usb.ts'
import { toSerialCommand } from './commands.ts'
import { reportPresence } from '../../gateway/links/presence.ts'
import type { LinkCommand, LinkCommandOutcome } from '../../gateway/links/device-link.ts'

export const SERIAL_LINK = 'serial'

export interface SerialLinkConfig {
  /** Registry id of the board on this port. */
  device: string
  /** Prefer a stable name (/dev/serial/by-id/...): ttyUSBn numbers change across replugs. With `usb`, a label. */
  path: string
  /** Find the port by USB identity at every open instead (re-enumeration after a replug is followed). */
  usb?: UsbMatch | undefined
  baudRate: number
  framing: 'cobs' | 'json'
  reopenMinMs: number
  reopenMaxMs: number
  /** No valid frame for this long: the board is offline even though the port is still open. */
  offlineAfterMs: number
}

export interface SerialLinkDeps {
  outbox: { append(raw: RawReading, done: (err: Error | null, refused?: string) => void): void }
  registry: { setOnline(id: string, online: boolean, link: string): void; setFirmware(id: string, version: string): void }
  bus: GatewayBus
  log: Logger
  openPort?: OpenPort
  listPorts?: ListPorts
}

/** The board's answer to a COMMAND frame ('sent': JSON-line framing, which has no answers). */
export type BoardCommandStatus = 'ok' | 'unknown_op' | 'bad_args' | 'sent'

export interface SerialLinkStatus {
  device: string
  path: string
  open: boolean
  online: boolean
  firmware: string | null
  framing: FramingStats
  readings: number
  duplicates: number
  reopens: number
  /** HELLO frames received (a flasher waits for the next one to learn the new firmware version). */
  hellos: number
}

/** Committed device sequence numbers remembered for duplicate detection; must exceed the firmware's window (4). */
const RECENT_SEQS = 16
const COMMAND_TRIES = 3
const COMMAND_RETRY_MS = 1000

export class SerialLink extends PortLink<SerialLinkConfig> {
  private port: PortHandle | null = null
  private decoder: CobsDecoder | JsonLineDecoder | null = null
  private livenessTimer: NodeJS.Timeout | null = null
  private noiseTimer: NodeJS.Timeout | null = null
  private online = false
  private firmware: string | null = null
  /** Boot counter from the board's last HELLO (null until one arrives on this open port). */
  private bootId: number | null = null
  /** Totals over all decoders this link had (one per open). */
  private readonly framing: FramingStats = { frames: 0, badFrames: 0, resyncs: 0 }
  private readings = 0
  private duplicates = 0
  private hellos = 0
  private readonly pendingSeqs = new Set<number>()
  private recentSeqs: number[] = []
  private cmdSeq = 0
  private readonly commands = new Map<number, (status: number) => void>()

  constructor(config: SerialLinkConfig, private readonly d: SerialLinkDeps) {
    super(config, SERIAL_LINK, d.log)
  }

  protected async close(reason: string): Promise<void> {
    if (this.noiseTimer) clearTimeout(this.noiseTimer)
    this.noiseTimer = null
    const p = this.port
    this.detach()
    if (p) await p.close()
    this.setOffline(reason)
    for (const resolve of this.commands.values()) resolve(-1)
    this.commands.clear()
  }

  status(): SerialLinkStatus {
    const f = this.decoder?.stats
    return {
      device: this.config.device, path: this.config.path, open: this.port !== null, online: this.online, firmware: this.firmware,
      framing: { frames: this.framing.frames + (f?.frames ?? 0), badFrames: this.framing.badFrames + (f?.badFrames ?? 0), resyncs: this.framing.resyncs + (f?.resyncs ?? 0) },
      readings: this.readings, duplicates: this.duplicates, reopens: this.reopener.count, hellos: this.hellos,
    }
  }

  /**
   * Sends a command and resolves with the board's result. Binary framing: retransmitted (same seq, the firmware
   * answers a repeat without running it twice) until a COMMAND_RESULT arrives. JSON framing has no results: 'sent'.
   */
  async send(cmd: SerialCommand): Promise<BoardCommandStatus> {
    if (!this.port) throw new Error(`serial port ${this.config.path} is not open`)
    if (this.config.framing === 'json') {
      await this.port.write(Buffer.from(JSON.stringify(cmd) + '\n'))
      return 'sent'
    }
    const seq = this.cmdSeq = (this.cmdSeq + 1) & 0xff
    const frame = encodeFrame({ type: FrameType.COMMAND, seq, payload: encodeCommand(cmd) })
    const result = new Promise<number>((resolve) => this.commands.set(seq, resolve))
    try {
      for (let attempt = 1; attempt <= COMMAND_TRIES; attempt++) {
        if (!this.port) throw new Error(`serial port ${this.config.path} closed before the command was answered`)
        await this.port.write(frame)
        let timer: NodeJS.Timeout | undefined
        const status = await Promise.race([result, new Promise<null>((r) => { timer = setTimeout(() => r(null), COMMAND_RETRY_MS) })])
        clearTimeout(timer)
        if (status === null) { this.log.debug({ cmd: cmd.op, seq, attempt }, 'no command result yet: retransmitting'); continue }
        if (status === -1) throw new Error('serial link stopped')
        return status === CommandStatus.OK ? 'ok' : status === CommandStatus.BAD_ARGS ? 'bad_args' : 'unknown_op'
      }
      throw new Error(`no answer from ${this.config.device} to ${cmd.op} after ${COMMAND_TRIES} tries`)
    } finally {
      this.commands.delete(seq)
    }
  }

  protected async open(): Promise<void> {
    if (this.stopped) return
    const opener = this.d.openPort ?? openSerialPort
    const decoder = this.config.framing === 'cobs' ? new CobsDecoder() : new JsonLineDecoder()
    let port: PortHandle
    let path: string
    try {
      const found = await resolvePortPath(this.config, this.d.listPorts)
      if (!found.ok) throw new Error(found.error)
      path = found.path
      port = await opener(path, this.config.baudRate, {
        data: (chunk) => {
          if (this.decoder !== decoder) return
          const bad = decoder.stats.badFrames + decoder.stats.resyncs
          decoder.write(chunk)
          if (decoder.stats.badFrames + decoder.stats.resyncs !== bad) this.noise()
        },
        lost: (err) => { if (this.port === port) this.lost(err) },
      })
    } catch (err) {
      const { delayMs, first } = this.reopener.failed()
      if (first) this.log.warn({ err: (err as Error).message, retryMs: delayMs }, 'serial port cannot be opened: retrying with backoff')
      else this.log.debug({ err: (err as Error).message, retryMs: delayMs }, 'serial port still cannot be opened')
      return
    }
    if (this.stopped) { await port.close(); return }
    this.port = port
    this.openPath = path
    this.decoder = decoder
    this.reopener.opened()
    // A fresh line: the board may have rebooted or been swapped, so forget what it had in flight.
    this.pendingSeqs.clear()
    this.recentSeqs = []
    this.bootId = null
    decoder.on('data', (f: Frame | Buffer) => { if (this.decoder === decoder) this.onFrame(f) })
    this.log.info({ baudRate: this.config.baudRate, framing: this.config.framing, ...(this.config.usb ? { devicePath: path } : {}) }, 'serial port open')
    this.armLiveness()
    // Ask the board to introduce itself (it may have booted long before we opened the port).
    if (this.config.framing === 'cobs') this.write(encodeFrame({ type: FrameType.HELLO, seq: 0, payload: Buffer.from('edgeway') }))
  }

  /** Line noise is logged at most once a second, with running totals, so a noisy cable cannot flood the log. */
  private noise(): void {
    if (this.noiseTimer) return
    this.noiseTimer = setTimeout(() => {
      this.noiseTimer = null
      const s = this.status().framing
      this.log.warn({ badFrames: s.badFrames, resyncs: s.resyncs, frames: s.frames }, 'serial line noise: damaged frames and garbage skipped')
    }, 1000)
    this.noiseTimer.unref()
  }

  private lost(err: Error): void {
    this.log.warn({ err: err.message }, 'serial port lost: board unplugged or gone; reopening with backoff')
    this.detach()
    this.setOffline('port lost')
    this.reopener.lost()
  }

  private detach(): void {
    if (this.decoder) {
      const s = this.decoder.stats
      this.framing.frames += s.frames
      this.framing.badFrames += s.badFrames
      this.framing.resyncs += s.resyncs
      this.decoder.removeAllListeners('data')
    }
    this.decoder = null
    this.port = null
    if (this.livenessTimer) clearTimeout(this.livenessTimer)
    this.livenessTimer = null
  }

  private armLiveness(): void {
    if (this.livenessTimer) clearTimeout(this.livenessTimer)
    this.livenessTimer = setTimeout(() => {
      this.livenessTimer = null
      if (this.online) this.log.warn({ silentMs: this.config.offlineAfterMs }, 'board silent: marking it offline (port stays open)')
      this.setOffline('silent')
    }, this.config.offlineAfterMs)
    this.livenessTimer.unref()
  }

  private setOnline(): void {
    if (this.online) return
    this.online = true
    reportPresence({ ...this.d, log: this.log }, { device: this.config.device, link: SERIAL_LINK, clientId: this.config.path, online: true, message: 'serial device online' })
  }

  private setOffline(reason: string): void {
    if (!this.online) return
    this.online = false
    reportPresence({ ...this.d, log: this.log }, { device: this.config.device, link: SERIAL_LINK, clientId: this.config.path, online: false, reason, message: 'serial device offline' })
  }

  private write(data: Uint8Array): void {
    const p = this.port
    if (!p) return
    p.write(data).catch((err: Error) => this.log.debug({ err: err.message }, 'serial write failed (port going away?)'))
  }

  private onFrame(f: Frame | Buffer): void {
    this.armLiveness()
    this.setOnline()
    if (Buffer.isBuffer(f)) { this.append(f, null); return }
    switch (f.type) {
      case FrameType.HELLO: {
        const version = Buffer.from(f.payload).toString('utf8').replace(/[^\x20-\x7e]/g, '').slice(0, 64)
        // HELLO's seq is the board's boot counter. A new one means a reboot: its sequence numbers start again.
        // The same one is only the answer to our HELLO, and the window it resends may hold readings already stored.
        if (this.bootId !== null && this.bootId !== f.seq) {
          this.log.info({ bootId: f.seq }, 'serial device rebooted')
          this.pendingSeqs.clear()
          this.recentSeqs = []
        }
        this.bootId = f.seq
        this.hellos++
        const changed = version !== this.firmware
        if (changed) this.log.info({ firmware: version }, 'serial device says hello')
        this.firmware = version
        try { this.d.registry.setFirmware(this.config.device, version) } catch (err) { this.log.warn({ err: (err as Error).message }, 'registry update failed') }
        // live views (the dashboard) follow firmware changes, e.g. after `edgeway flash`
        if (changed) this.d.bus.safeEmit('firmware', { device: this.config.device, version, healthy: null })
        break
      }
      case FrameType.READING: {
        const metrics = decodeReadingPayload(f.payload)
        if (!metrics) {
          this.log.warn({ seq: f.seq, bytes: f.payload.length }, 'READING frame with a malformed payload: refused (acked so the board drops it)')
          this.write(encodeFrame({ type: FrameType.ACK, seq: f.seq, payload: Buffer.alloc(0) }))
          break
        }
        if (this.pendingSeqs.has(f.seq)) { this.duplicates++; break } // its ACK follows the commit already under way
        if (this.recentSeqs.includes(f.seq)) {
          // Stored already and our ACK was lost: ack again, do not store twice.
          this.duplicates++
          this.write(encodeFrame({ type: FrameType.ACK, seq: f.seq, payload: Buffer.alloc(0) }))
          break
        }
        this.append(Buffer.from(JSON.stringify({ ...metrics, seq: f.seq })), f.seq)
        break
      }
      case FrameType.COMMAND_RESULT: {
        this.commands.get(f.seq)?.(f.payload[0] ?? CommandStatus.BAD_ARGS)
        break
      }
      case FrameType.NACK:
        this.log.warn({ seq: f.seq }, 'board refused a frame (NACK)')
        break
      default:
        this.log.debug({ type: frameTypeName(f.type), seq: f.seq }, 'unexpected frame from the board: ignored')
    }
  }

  /** seq null: JSON-line framing, no acknowledgements on the line. */
  private append(payload: Buffer, seq: number | null): void {
    const port = this.port
    if (seq !== null) this.pendingSeqs.add(seq)
    this.d.outbox.append({ device: this.config.device, link: SERIAL_LINK, payload }, (err, refused) => {
      if (seq === null) {
        if (err) this.log.error({ err: err.message }, 'outbox write failed: a JSON-line reading is lost (that framing has no retransmit)')
        else if (refused !== undefined) this.log.warn({ reason: refused }, 'serial reading refused: payload does not decode')
        else this.readings++
        return
      }
      // Only for the port the reading came in on: after a reopen the board resends what it still holds.
      if (this.port !== port) return
      this.pendingSeqs.delete(seq)
      if (err) {
        this.log.error({ err: err.message, seq }, 'outbox write failed: NACK, the board retransmits')
        this.write(encodeFrame({ type: FrameType.NACK, seq, payload: Buffer.alloc(0) }))
        return
      }
      if (refused !== undefined) this.log.warn({ reason: refused, seq }, 'serial reading refused: payload does not decode')
      else this.readings++
      this.recentSeqs.push(seq)
      if (this.recentSeqs.length > RECENT_SEQS) this.recentSeqs.shift()
      this.write(encodeFrame({ type: FrameType.ACK, seq, payload: Buffer.alloc(0) }))
    })
  }
}

/** All configured serial links, started and stopped together by main; the serial DeviceLink. */
export class SerialLinks extends PortLinks<SerialLink> {
  readonly kind = SERIAL_LINK
  constructor(ports: SerialLinkConfig[], deps: SerialLinkDeps) {
    super(ports.map((p) => new SerialLink(p, deps)))
  }

  /** The routed command mapped to the board's command set; the board answers in-band (COMMAND_RESULT). */
  protected async send(link: SerialLink, cmd: LinkCommand): Promise<LinkCommandOutcome> {
    const mapped = toSerialCommand(cmd.name, cmd.args)
    if (!mapped.ok) return { kind: 'answered', ok: false, error: mapped.error }
    const status = await link.send(mapped.command)
    return status === 'ok' || status === 'sent' ? { kind: 'answered', ok: true, result: status } : { kind: 'answered', ok: false, error: status }
  }

}
