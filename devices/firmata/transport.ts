// A Firmata transport (the serialport-like object firmata-io talks to) on the project's own serial port wrapper,
// so johnny-five and firmata never open a port themselves and no second serialport is needed.
import { EventEmitter } from 'node:events'
import { openSerialPort, type OpenPort, type PortHandle } from '../serial/port.ts'

export class SerialTransport extends EventEmitter {
  private port: PortHandle | null = null
  private closed = false
  /** When the board last sent anything (the link's silence watch reads it). */
  lastDataAt = 0

  constructor(readonly path: string, private readonly baudRate: number, private readonly opener: OpenPort = openSerialPort) { super() }

  /** Opens the port; 'open' on success, 'error' on failure, 'close' when it is lost later. */
  async open(): Promise<void> {
    try {
      const port = await this.opener(this.path, this.baudRate, {
        data: (chunk) => { this.lastDataAt = Date.now(); this.emit('data', chunk) },
        lost: (err) => { if (!this.closed) { this.port = null; this.emit('close', { disconnect: true, disconnected: true, err }) } },
      })
      if (this.closed) { await port.close(); return }
      this.port = port
      this.emit('open')
    } catch (err) {
      this.emit('error', err)
    }
  }

  get isOpen(): boolean { return this.port !== null }

  write(data: Buffer, cb?: (err?: Error | null) => void): boolean {
    const p = this.port
    if (!p) { cb?.(new Error('port not open')); return false }
    p.write(data).then(() => cb?.(null), (err: Error) => cb?.(err))
    return true
  }

  async close(): Promise<void> {
    this.closed = true
    const p = this.port
    this.port = null
    if (p) await p.close()
  }
}
