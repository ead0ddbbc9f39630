// The one file that imports serialport: open a port by path, write bytes, hear data and its loss; list ports.
// Also the one place that reaches into its bindings (see hangUpAwareBinding).
import { read as fsRead } from 'node:fs'
import { promisify } from 'node:util'
import { createRequire } from 'node:module'
import type { SerialPort as SerialPortClass } from 'serialport'
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

type FsRead = (fd: number, buffer: Buffer, offset: number, length: number, position: null) => Promise<{ bytesRead: number; buffer: Buffer }>
/** What this file needs of a serialport binding and its open ports (structural: the platform types are a union). */
interface ReadablePort { read(buffer: Buffer, offset: number, length: number): Promise<{ bytesRead: number; buffer: Buffer }> }
interface MinimalBinding { list(): Promise<unknown>; open(options: object): Promise<ReadablePort> }
type UnixRead = (o: { binding: ReadablePort; buffer: Buffer; offset: number; length: number; fsReadAsync?: FsRead }) => Promise<{ bytesRead: number; buffer: Buffer }>

/** Internal module of @serialport/bindings-cpp 13 (Linux and macOS reads); test/serial-port-adapter.test.ts checks it. */
export const UNIX_READ_MODULE = '@serialport/bindings-cpp/dist/unix-read.js'
let unixRead: UnixRead | null = null
export function loadUnixRead(): UnixRead {
  if (unixRead) return unixRead
  const m = createRequire(import.meta.url)(UNIX_READ_MODULE) as { unixRead?: unknown }
  if (typeof m.unixRead !== 'function') throw new Error(`${UNIX_READ_MODULE} has no unixRead: @serialport/bindings-cpp changed; see devices/serial/port.ts`)
  unixRead = m.unixRead as UnixRead
  return unixRead
}

const readAsync = promisify(fsRead) as unknown as FsRead

/**
 * A raw tty read of 0 bytes means the line hung up (a USB adapter unplugged, a pty whose other side exited): with
 * O_NONBLOCK and VMIN=1 "no data yet" is EAGAIN, never 0. bindings-cpp 13 retries 0-byte reads at once, forever,
 * when the hang-up arrives during a read rather than during a poll (1 in ~8 pty closes here): the port then spins
 * and is never reported lost. This read turns it into an EIO, which serialport treats as a disconnect.
 */
export const hangUpAwareRead: FsRead = async (fd, buffer, offset, length, position) => {
  const r = await readAsync(fd, buffer, offset, length, position)
  if (r.bytesRead === 0) throw Object.assign(new Error('the serial line hung up (end of file): device gone'), { code: 'EIO' })
  return r
}

/** The platform binding, with hangUpAwareRead on Unix ports (those with a poller); Windows ports are unchanged. */
export function hangUpAwareBinding<B extends { list(): Promise<unknown> }>(detected: B): B {
  const open = (detected as unknown as MinimalBinding).open.bind(detected)
  const wrapped: MinimalBinding = {
    list: () => detected.list(),
    async open(options) {
      const port = await open(options)
      if (!('poller' in port)) return port
      const read = loadUnixRead()
      port.read = (buffer, offset, length) => read({ binding: port, buffer, offset, length, fsReadAsync: hangUpAwareRead })
      return port
    },
  }
  return wrapped as unknown as B
}

// Loaded at the first open or list: a gateway without serial boards never loads serialport and its bindings
// (about 2 MiB of RSS, measured).
let serialPortClass: typeof SerialPortClass | null = null
const loadSerialPort = async (): Promise<typeof SerialPortClass> => (serialPortClass ??= (await import('serialport')).SerialPort)
let binding: typeof SerialPortClass.binding | null = null

export const openSerialPort: OpenPort = async (path, baudRate, on) => {
  const SerialPort = await loadSerialPort()
  binding ??= hangUpAwareBinding(SerialPort.binding)
  // SerialPort's option type leaves `binding` out, its constructor takes it (and gives it precedence).
  const options = { path, baudRate, autoOpen: false, hupcl: false, binding }
  const port = new SerialPort(options)
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
  (await (await loadSerialPort()).list()).map((p) => ({ path: p.path, vendorId: p.vendorId, productId: p.productId, serialNumber: p.serialNumber, manufacturer: p.manufacturer }))

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
