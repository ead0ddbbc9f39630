// One StandardFirmata board through johnny-five, with firmata-io as its io on our own transport (the only file that
// imports johnny-five and firmata-io). Builds the configured components once the board is ready.
import bindFirmata from 'firmata-io'
import five from 'johnny-five'
import type { FirmataBoardConfig } from './config.ts'
import type { ActuatorAction } from './commands.ts'
import type { SerialTransport } from './transport.ts'

export interface ConnectedBoard {
  /** e.g. "StandardFirmata.ino 2.5" */
  firmware: string
  /** Every sensor's latest value and every actuator's state (1/0); null until a sensor has reported. */
  values(): Record<string, number | null>
  /** Runs an action on an actuator; resolves with its new state (1 on, 0 off). */
  actuate(name: string, action: ActuatorAction): number
  /** A button changed: the caller reports at once. */
  onChange(cb: () => void): void
  /** Asks the board for its version: a live board answers, so the port hears from it. */
  probe(): void
  /** Stops the components' sampling timers (johnny-five keeps them running for a board that is gone). */
  close(): void
}

type Reader = () => number | null
type Actor = { act(a: ActuatorAction): void; state(): number }

/** Resolves when johnny-five says ready (within timeoutMs of the port opening), rejects on error or timeout. */
export function connectBoard(cfg: FirmataBoardConfig, transport: SerialTransport): Promise<ConnectedBoard> {
  // A version report is asked for if the board has not sent one this soon (it sends one when it boots, and a board
  // that was running before we opened the port does not).
  const io = new bindFirmata.Firmata(transport, { reportVersionTimeout: 500, samplingInterval: cfg.samplingIntervalMs })
  const board = new five.Board({ io, id: cfg.device, repl: false, debug: false, sigint: false, timeout: cfg.readyTimeoutMs })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no Firmata answer within ${cfg.readyTimeoutMs} ms: is StandardFirmata running at ${cfg.baudRate} baud?`)), cfg.readyTimeoutMs)
    // johnny-five re-emits io errors on the board later too: keep a listener for good (the link watches the port)
    board.on('error', (err: Error) => { clearTimeout(timer); reject(err) })
    board.once('ready', () => {
      clearTimeout(timer)
      const readers = new Map<string, Reader>()
      const actors = new Map<string, Actor>()
      const changed: (() => void)[] = []
      const sampled: { freq: number | null }[] = []
      for (const s of cfg.sensors) {
        switch (s.type) {
          case 'analog': {
            const c = new five.Sensor({ board, pin: s.pin, freq: cfg.samplingIntervalMs })
            readers.set(s.name, () => c.value)
            sampled.push(c)
            break
          }
          case 'thermometer': {
            const c = new five.Thermometer({ board, pin: s.pin, controller: s.controller, freq: cfg.samplingIntervalMs })
            readers.set(s.name, () => (c.celsius === null ? null : Math.round(c.celsius * 100) / 100))
            sampled.push(c)
            break
          }
          case 'button': {
            const c = new five.Button({ board, pin: s.pin, isPullup: s.pullup, invert: s.invert })
            readers.set(s.name, () => (c.isDown ? 1 : 0))
            for (const ev of ['press', 'release']) c.on(ev, () => { for (const cb of changed) cb() })
            break
          }
        }
      }
      for (const a of cfg.actuators) {
        if (a.type === 'led') {
          const c = new five.Led({ board, pin: a.pin })
          actors.set(a.name, { act: (x) => c[x](), state: () => (c.isOn ? 1 : 0) })
        } else {
          const c = new five.Relay({ board, pin: a.pin, type: a.relayType })
          // a relay is "on" when closed (energised for NO); johnny-five maps the pin level for NC
          actors.set(a.name, { act: (x) => (x === 'on' ? c.close() : x === 'off' ? c.open() : c.toggle()), state: () => (c.isClosed ? 1 : 0) })
        }
      }
      const fw = io.firmware
      resolve({
        firmware: `${fw.name ?? 'Firmata'}${fw.version ? ` ${fw.version.major}.${fw.version.minor}` : ''}`,
        values: () => {
          const out: Record<string, number | null> = {}
          for (const [n, r] of readers) out[n] = r()
          for (const [n, a] of actors) out[n] = a.state()
          return out
        },
        actuate: (name, action) => {
          const a = actors.get(name)
          if (!a) throw new Error(`no actuator "${name}"`)
          a.act(action)
          return a.state()
        },
        onChange: (cb) => { changed.push(cb) },
        probe: () => { io.reportVersion(() => undefined) },
        close: () => {
          changed.length = 0
          for (const c of sampled) c.freq = null
        },
      })
    })
  })
}
