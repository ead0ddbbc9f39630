// The one file that imports serialport: open a port by path, write bytes, hear data and its loss; list ports.
import { SerialPort } from 'serialport'
import { matchUsbPort, type PortInfo, type Resolved, type UsbMatch } from './usb.ts'

export interface PortHandle {
  readonly path: string
  write(data: Uint8Array): Promise<void>
  /** Sets the modem control lines (DTR/RTS reset an Arduino); rejects where the port has none (a pty). */
  setSignals(s: { dtr: boolean; rts: boolean }): Promise<void>
  close(): Promise<void>
}

export interface PortEvents {
  data(chunk: Buffer): void
  /** The port is gone or failed (unplugged board, read error, closed under us); called at most once. */
  lost(err: Error): void
}

export type OpenPort = (path: string, baudRate: number, on: PortEvents) => Promise<PortHandle>

export const openSerialPort: OpenPort = async (path, baudRate, on) => {
  const port = new SerialPort({ path, baudRate, autoOpen: false, hupcl: false })
  await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())))
  let closing = false
  let lostOnce = false
  const lost = (err: Error): void => {
    if (lostOnce || closing) return
    lostOnce = true
    on.lost(err)
    // A read error (a pty reports EIO when its master went away) leaves the fd open: release it.
    if (port.isOpen) port.close(() => undefined)
  }
  // A consumer that throws would stop serialport's read loop for good (and with it the unplug detection): treat the
  // port as lost instead, so the link reopens it and says why.
  port.on('data', (chunk: Buffer) => {
    try { on.data(chunk) } catch (err) { lost(new Error(`reading the port failed: ${(err as Error).message}`)) }
  })
  port.on('error', (err: Error) => lost(err))
  port.on('close', (err: Error | null) => lost(err ?? new Error('port closed')))
  return {
    path,
    write: (data) => new Promise<void>((resolve, reject) => {
      if (!port.isOpen) { reject(new Error('port not open')); return }
      port.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength), (err) => (err ? reject(err) : resolve()))
    }),
    setSignals: (s) => new Promise<void>((resolve, reject) => {
      if (!port.isOpen) { reject(new Error('port not open')); return }
      port.set(s, (err) => (err ? reject(err) : resolve()))
    }),
    close: () => new Promise<void>((resolve) => {
      closing = true
      if (!port.isOpen) { resolve(); return }
      port.close(() => resolve())
    }),
  }
}

export type ListPorts = () => Promise<PortInfo[]>

/** The serial ports present, with their USB identity where the OS knows it (udev on Linux). */
export const listSerialPorts: ListPorts = async () =>
  (await SerialPort.list()).map((p) => ({ path: p.path, vendorId: p.vendorId, productId: p.productId, serialNumber: p.serialNumber, manufacturer: p.manufacturer }))

/** Where a configured port is known to be: where it was last opened, else its path unless it is found by USB identity. */
export function knownPortPath(port: { path: string; usb?: UsbMatch | undefined }, openPath: string | null): string | null {
  return openPath ?? (port.usb ? null : port.path)
}

/** The device path of a port given by path, or by USB identity (looked up now among the present ports). */
export async function resolvePortPath(port: { path: string; usb?: UsbMatch | undefined }, list: ListPorts = listSerialPorts): Promise<Resolved> {
  if (!port.usb) return { ok: true, path: port.path }
  let present: PortInfo[]
  try { present = await list() } catch (err) { return { ok: false, error: `listing serial ports failed: ${(err as Error).message}` } }
  return matchUsbPort(present, port.usb)
}
