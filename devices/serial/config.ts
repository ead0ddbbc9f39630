// The `serial:` section of edgeway.yaml (boards on serial ports): validated here, one line in app/config/schema.ts.
import { z } from 'zod'
import { DEVICE_ID_RE, DEVICE_ID_RULE } from '../../gateway/readings.ts'
import { usbIdentity, usbLabel } from './usb.ts'

/** A board on a serial port (devices/serial/link.ts). */
const serialPort = z.object({
  /** Registry id of the board: its readings, presence and firmware version are recorded under it. */
  device: z.string().regex(DEVICE_ID_RE, DEVICE_ID_RULE),
  /** Prefer a stable name such as /dev/serial/by-id/usb-...: ttyUSB numbers change when boards are replugged. */
  path: z.string().min(1).optional(),
  /** Or the board's USB identity, looked up among the present ports at every (re)open: survives re-enumeration. */
  usb: usbIdentity.optional(),
  baudRate: z.number().int().min(300).max(4000000).default(115200),
  /** cobs: the sensor-node binary framing (acks, retransmit, commands); json: one JSON object per line. */
  framing: z.enum(['cobs', 'json']).default('cobs'),
  reopenMinMs: z.number().int().min(10).default(250),
  reopenMaxMs: z.number().int().min(100).default(10000),
  /** No valid frame for this long: the board is marked offline (the port stays open). */
  offlineAfterMs: z.number().int().min(100).default(10000),
}).strict()
  .refine((p) => (p.path === undefined) !== (p.usb === undefined), 'give either path or usb (vendorId, productId, serialNumber), not both')
  // the link logs and is looked up by `path`: a USB identity gets a stable label there (usb:2341:0043:SN)
  .transform((p) => ({ ...p, path: p.path ?? usbLabel(p.usb!) }))

export const serialSection = z.object({
  ports: z.array(serialPort).default([]).refine((ps) => new Set(ps.map((p) => p.path)).size === ps.length, 'serial port paths must be unique'),
}).strict()
