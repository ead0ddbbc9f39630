// Serial ports named by USB identity (vendor id, product id, serial number) instead of a device path: pure matching
// of a port list (SerialPort.list(), through port.ts) against the configured identity, and its config schema.
import { z } from 'zod'

/** `usb:` in a serial port's or Firmata board's config: looked up among the present ports at every (re)open. */
export const usbIdentity = z.object({
  vendorId: z.string().regex(/^(0x)?[0-9a-fA-F]{1,4}$/, 'a USB vendor id in hex, e.g. "2341"'),
  productId: z.string().regex(/^(0x)?[0-9a-fA-F]{1,4}$/, 'a USB product id in hex, e.g. "0043"'),
  /** Needed when several boards of one kind are plugged in. */
  serialNumber: z.string().min(1).optional(),
}).strict()

export type UsbMatch = z.output<typeof usbIdentity>
export interface PortInfo { path: string; vendorId?: string | undefined; productId?: string | undefined; serialNumber?: string | undefined; manufacturer?: string | undefined }

/** "0x2341", "2341" and "2341 " all mean the same id. */
const norm = (id: string | undefined): string => (id ?? '').trim().toLowerCase().replace(/^0x/, '').padStart(4, '0')

export function usbLabel(m: UsbMatch): string {
  return `usb:${norm(m.vendorId)}:${norm(m.productId)}${m.serialNumber ? `:${m.serialNumber}` : ''}`
}

export type Resolved = { ok: true; path: string } | { ok: false; error: string }

export function matchUsbPort(ports: readonly PortInfo[], m: UsbMatch): Resolved {
  const hits = ports.filter((p) => p.vendorId !== undefined && norm(p.vendorId) === norm(m.vendorId) && norm(p.productId) === norm(m.productId)
    && (m.serialNumber === undefined || p.serialNumber === m.serialNumber))
  const want = `${norm(m.vendorId)}:${norm(m.productId)}${m.serialNumber ? ` serial ${m.serialNumber}` : ''}`
  if (hits.length === 1) return { ok: true, path: hits[0]!.path }
  if (hits.length === 0) {
    const seen = ports.filter((p) => p.vendorId).map((p) => `${norm(p.vendorId)}:${norm(p.productId)}${p.serialNumber ? ` serial ${p.serialNumber}` : ''} at ${p.path}`)
    return { ok: false, error: `no USB serial device ${want} plugged in${seen.length ? ` (present: ${seen.join(', ')})` : ''}` }
  }
  return { ok: false, error: `${hits.length} USB serial devices match ${want} (${hits.map((p) => `${p.path}${p.serialNumber ? ` serial ${p.serialNumber}` : ''}`).join(', ')}): add serialNumber to tell them apart` }
}
