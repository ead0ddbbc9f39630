// Pure mapping of a routed command (name + JSON args, as an upstream or the dashboard sends it) to the
// sensor-node's serial command set.
import type { SerialCommand } from './framing.ts'

export type Mapped = { ok: true; command: SerialCommand } | { ok: false; error: string }

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)

/** `setInterval {ms}` (or a bare number), `readNow`, `setOutput {pin, value}`, `reboot`. */
export function toSerialCommand(name: string, args: unknown): Mapped {
  const a = (args && typeof args === 'object' ? args : {}) as Record<string, unknown>
  switch (name) {
    case 'setInterval': {
      const ms = num(args) ?? num(a.ms)
      if (ms === undefined || !Number.isInteger(ms) || ms < 10 || ms > 65535) return { ok: false, error: 'setInterval needs {"ms": 10..65535}' }
      return { ok: true, command: { op: 'setInterval', ms } }
    }
    case 'readNow': return { ok: true, command: { op: 'readNow' } }
    case 'setOutput': {
      const pin = num(a.pin)
      if (pin === undefined || !Number.isInteger(pin) || pin < 0 || pin > 255 || typeof a.value !== 'boolean') return { ok: false, error: 'setOutput needs {"pin": 0..255, "value": true|false}' }
      return { ok: true, command: { op: 'setOutput', pin, value: a.value } }
    }
    case 'reboot': return { ok: true, command: { op: 'reboot' } }
    default: return { ok: false, error: `unknown command "${name}" (serial boards know setInterval, readNow, setOutput, reboot)` }
  }
}
