// A device's metadata as the device page edits it: any JSON object, with two keys the gateway reads. `metrics`
// maps a metric name to its display `{ unit, name }` (the history charts read units and names from there), and
// `commands` declares the commands the device understands, from which the page draws forms. Pure validation.
import { z } from 'zod'
import { COMMAND_NAME_RE } from '../readings.ts'

export const MAX_METADATA_BYTES = 16 * 1024

const metricMeta = z.object({
  unit: z.string().max(32).optional(),
  name: z.string().min(1).max(64).optional(),
}).strict()

const argSpec = z.object({
  type: z.enum(['number', 'integer', 'string', 'boolean']),
  description: z.string().max(200).optional(),
  min: z.number().optional(),
  max: z.number().optional(),
  enum: z.array(z.union([z.string(), z.number()])).max(50).optional(),
  default: z.union([z.string(), z.number(), z.boolean()]).optional(),
  required: z.boolean().optional(),
}).strict()

export const commandDecl = z.object({
  name: z.string().regex(COMMAND_NAME_RE, 'a command name is 1 to 64 of A-Za-z0-9._-'),
  description: z.string().max(200).optional(),
  args: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,31}$/, 'an argument name is a letter or "_" then up to 31 letters, digits or "_"'), argSpec).optional(),
  /** How Home Assistant shows it (bridges/homeassistant): a button (default) or an on/off switch. */
  kind: z.enum(['button', 'switch']).optional(),
  /** For a switch: the boolean metric that reports its state. */
  state: z.string().min(1).max(64).optional(),
}).strict()
export type CommandDecl = z.infer<typeof commandDecl>

export const deviceMetadata = z.object({
  metrics: z.record(z.string().min(1).max(64), metricMeta).optional(),
  commands: z.array(commandDecl).max(50).optional(),
}).catchall(z.unknown())
export type DeviceMetadata = z.infer<typeof deviceMetadata>

export type MetadataCheck = { ok: true; value: Record<string, unknown> } | { ok: false; error: string }

/** The whole new metadata object, or the first problems in words (path: message). */
export function checkMetadata(raw: unknown): MetadataCheck {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return { ok: false, error: 'metadata must be a JSON object' }
  const size = Buffer.byteLength(JSON.stringify(raw))
  if (size > MAX_METADATA_BYTES) return { ok: false, error: `metadata is ${size} bytes; the limit is ${MAX_METADATA_BYTES}` }
  const r = deviceMetadata.safeParse(raw)
  if (!r.success) return { ok: false, error: r.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || 'metadata'}: ${i.message}`).join('; ') }
  const names = (r.data.commands ?? []).map((c) => c.name)
  const dup = names.find((n, i) => names.indexOf(n) !== i)
  if (dup) return { ok: false, error: `commands: "${dup}" is declared twice` }
  return { ok: true, value: raw as Record<string, unknown> }
}

/** The sensor-node firmware's command set (devices/firmware/, README "Commands"): what a serial board understands. */
export const SERIAL_COMMANDS: CommandDecl[] = [
  { name: 'setInterval', description: 'report every ms (10 ms resolution)', args: { ms: { type: 'integer', min: 10, max: 65535, required: true } } },
  { name: 'readNow', description: 'send one reading at once' },
  { name: 'setOutput', description: 'drive a digital pin high or low', args: { pin: { type: 'integer', min: 2, max: 13, required: true }, value: { type: 'boolean', required: true } } },
  { name: 'reboot', description: 'answer, then reboot (watchdog)' },
]

/** What the page offers as forms: the metadata's declaration, else the serial firmware's set on a serial link. */
export function declaredCommands(metadata: Record<string, unknown>, link: string | null): CommandDecl[] {
  const r = z.array(commandDecl).safeParse(metadata.commands)
  if (r.success) return r.data
  return link === 'serial' ? SERIAL_COMMANDS : []
}
