// The parts of firmata-io and johnny-five (plain JavaScript, no bundled types) that devices/firmata uses.
declare module 'firmata-io' {
  import type { EventEmitter } from 'node:events'
  /** What Firmata needs from a transport: serialport's events and write(). */
  export interface FirmataTransport extends EventEmitter {
    write(data: Buffer, cb?: (err?: Error | null) => void): unknown
  }
  export interface FirmataOptions { reportVersionTimeout?: number; samplingInterval?: number; skipCapabilities?: boolean }
  export interface FirmataBoard extends EventEmitter {
    isReady: boolean
    firmware: { name?: string; version?: { major: number; minor: number } }
    setSamplingInterval(ms: number): void
    /** Sends REPORT_VERSION; the callback runs when the board's answer arrives. */
    reportVersion(cb: () => void): void
  }
  interface FirmataClass { new (port: FirmataTransport, options?: FirmataOptions, callback?: (err?: Error) => void): FirmataBoard }
  interface Bind { (transport: unknown): FirmataClass; Firmata: FirmataClass }
  const bind: Bind
  export default bind
}

declare module 'johnny-five' {
  import type { EventEmitter } from 'node:events'
  export interface BoardOptions { io: unknown; id?: string; repl?: boolean; debug?: boolean; sigint?: boolean; timeout?: number }
  export class Board extends EventEmitter { constructor(o: BoardOptions); isReady: boolean }
  interface On { board: Board }
  export class Sensor extends EventEmitter { constructor(o: On & { pin: string | number; freq?: number }); readonly value: number | null; freq: number | null }
  export class Thermometer extends EventEmitter { constructor(o: On & { pin: string | number; controller?: string; freq?: number }); readonly celsius: number | null; freq: number | null }
  export class Button extends EventEmitter { constructor(o: On & { pin: number; isPullup?: boolean; invert?: boolean }); readonly isDown: boolean }
  export class Led { constructor(o: On & { pin: number }); on(): void; off(): void; toggle(): void; readonly isOn: boolean }
  export class Relay { constructor(o: On & { pin: number; type?: 'NO' | 'NC' }); open(): void; close(): void; toggle(): void; readonly isClosed: boolean }
  const five: { Board: typeof Board; Sensor: typeof Sensor; Thermometer: typeof Thermometer; Button: typeof Button; Led: typeof Led; Relay: typeof Relay }
  export default five
}
