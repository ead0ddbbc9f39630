// Pure mapping of a routed command to an actuator action: the command name is the actuator's configured name,
// the argument says what to do (`true`/`false`, "on"/"off"/"toggle", or {"on": true}).
import type { FirmataActuator } from './config.ts'

export type ActuatorAction = 'on' | 'off' | 'toggle'
export type MappedAction = { ok: true; actuator: FirmataActuator; action: ActuatorAction } | { ok: false; error: string }

export function toActuatorAction(actuators: readonly FirmataActuator[], name: string, args: unknown): MappedAction {
  const actuator = actuators.find((a) => a.name === name)
  if (!actuator) {
    const known = actuators.map((a) => a.name).join(', ') || 'none configured'
    return { ok: false, error: `unknown command "${name}" (this board's actuators: ${known})` }
  }
  const v = args && typeof args === 'object' && !Array.isArray(args) ? (args as Record<string, unknown>).on ?? (args as Record<string, unknown>).value : args
  if (v === true || v === 1 || v === 'on') return { ok: true, actuator, action: 'on' }
  if (v === false || v === 0 || v === 'off') return { ok: true, actuator, action: 'off' }
  if (v === 'toggle') return { ok: true, actuator, action: 'toggle' }
  return { ok: false, error: `${name} needs true/false, "on"/"off"/"toggle" or {"on": true|false}` }
}
