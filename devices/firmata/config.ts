// The `firmata` YAML section: boards running StandardFirmata, each pin described as a sensor or an actuator.
// Validated here, referenced by one line in app/config/schema.ts.
import { z } from 'zod'
import { DEVICE_ID_RE, DEVICE_ID_RULE } from '../../gateway/readings.ts'
import { usbIdentity, usbLabel } from '../serial/usb.ts'

const name = z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,31}$/, 'a letter, then letters, digits or "_", at most 32 characters')
/** Analog inputs of an Uno: A0..A5. */
const analogPin = z.string().regex(/^A[0-5]$/, 'an analog pin A0..A5')
/** Digital pins 2..13 (0 and 1 are the serial line Firmata itself uses). */
const digitalPin = z.number().int().min(2, 'pins 0 and 1 carry the serial line').max(13)

const sensor = z.discriminatedUnion('type', [
  /** Raw ADC value 0..1023. */
  z.object({ type: z.literal('analog'), name, pin: analogPin }).strict(),
  /** An analog temperature sensor, reported in °C. */
  z.object({ type: z.literal('thermometer'), name, pin: analogPin, controller: z.enum(['LM35', 'TMP36']).default('LM35') }).strict(),
  /** 1 while pressed; a change is reported at once. */
  z.object({ type: z.literal('button'), name, pin: digitalPin, pullup: z.boolean().default(false), invert: z.boolean().default(false) }).strict(),
])

const actuator = z.discriminatedUnion('type', [
  z.object({ type: z.literal('led'), name, pin: digitalPin }).strict(),
  /** NO: closed (energised) on "on"; NC: the other way round. */
  z.object({ type: z.literal('relay'), name, pin: digitalPin, relayType: z.enum(['NO', 'NC']).default('NO') }).strict(),
])

export const firmataBoard = z.object({
  /** Registry id: readings, presence and the Firmata firmware name are recorded under it. */
  device: z.string().regex(DEVICE_ID_RE, DEVICE_ID_RULE),
  /** Prefer /dev/serial/by-id/...: ttyUSB numbers change when boards are replugged. */
  path: z.string().min(1).optional(),
  /** Or the board's USB identity, looked up among the present ports at every (re)open. */
  usb: usbIdentity.optional(),
  /** StandardFirmata's rate. */
  baudRate: z.number().int().min(300).max(4000000).default(57600),
  /** One reading with every sensor's latest value this often (a button change is sent at once as well). */
  reportIntervalMs: z.number().int().min(50).default(1000),
  /** How often the board samples its analog pins (Firmata sampling interval). */
  samplingIntervalMs: z.number().int().min(10).max(16383).default(100),
  /** No Firmata version/ready within this time after the port opened: close and retry. */
  readyTimeoutMs: z.number().int().min(500).default(10000),
  /** Nothing heard from a ready board for this long (a version query is sent at half of it): it is treated as gone.
   *  A hung or browned-out MCU behind a USB adapter that stays plugged in gives no port error of its own. */
  silenceTimeoutMs: z.number().int().min(200).default(5000),
  reopenMinMs: z.number().int().min(10).default(500),
  reopenMaxMs: z.number().int().min(100).default(10000),
  sensors: z.array(sensor).default([]),
  actuators: z.array(actuator).default([]),
}).strict().superRefine((b, ctx) => {
  if ((b.path === undefined) === (b.usb === undefined)) ctx.addIssue({ code: 'custom', message: `give either path or usb (vendorId, productId, serialNumber) for ${b.device}, not both` })
  const names = [...b.sensors, ...b.actuators].map((x) => x.name)
  for (const n of new Set(names.filter((x, i) => names.indexOf(x) !== i))) ctx.addIssue({ code: 'custom', message: `name "${n}" is used twice on ${b.device}` })
  const pins = [...b.sensors, ...b.actuators].map((x) => String(x.pin))
  for (const p of new Set(pins.filter((x, i) => pins.indexOf(x) !== i))) ctx.addIssue({ code: 'custom', message: `pin ${p} is used twice on ${b.device}` })
})
  // logs, the flasher and path uniqueness use `path`: a USB identity gets a stable label there (usb:2341:0043:SN)
  .transform((b) => ({ ...b, path: b.path ?? usbLabel(b.usb!) }))

export const firmataSection = z.object({
  boards: z.array(firmataBoard).default([]).refine((bs) => new Set(bs.map((b) => b.path)).size === bs.length, 'firmata board paths must be unique'),
}).strict()

export type FirmataBoardConfig = z.output<typeof firmataBoard>
export type FirmataSensor = z.infer<typeof sensor>
export type FirmataActuator = z.infer<typeof actuator>
