// The one definition of edgeway.yaml: defaults, validation and the editor JSON schema all come from here. Each
// section is defined beside the code it configures (gateway/config/sections.ts for the core, bridges/*/config.ts,
// devices/*/config.ts); this file only composes them.
import { z } from 'zod'
import { gatewaySection, logSection, mqttSection, listener, outboxSection, rolesSection, mqttUpstream } from '../../gateway/config/sections.ts'
import { dashboardConfig } from '../../gateway/dashboard/config.ts'
import { historyConfig } from '../../gateway/history/config.ts'
import { alertsSection } from '../../gateway/alerts/config.ts'
import { cameraSchema } from '../../gateway/camera/config.ts'
import { amqpUpstream } from '../../bridges/amqp/config.ts'
import { xmppSection } from '../../bridges/xmpp/config.ts'
import { homeAssistantSection } from '../../bridges/homeassistant/config.ts'
import { serialSection } from '../../devices/serial/config.ts'
import { firmataSection } from '../../devices/firmata/config.ts'
import { fleetSection } from '../../fleet/config.ts'

export { defaultGatewayId } from '../../gateway/config/sections.ts'

export const upstreamSchema = z.discriminatedUnion('type', [mqttUpstream, amqpUpstream])

export const configSchema = z.object({
  gateway: gatewaySection.prefault({}),
  log: logSection.prefault({}),
  mqtt: mqttSection.prefault({}),
  http: listener(8080, true).prefault({}),
  dashboard: dashboardConfig.prefault({}),
  /** Numeric history per device metric in history.db (charts, /api/history, CSV export). */
  history: historyConfig.prefault({}),
  outbox: outboxSection.prefault({}),
  serial: serialSection.prefault({}),
  firmata: firmataSection.prefault({}),
  xmpp: xmppSection.prefault({}),
  /** Home Assistant MQTT discovery (bridges/homeassistant/): entities for every device, availability, buttons. */
  homeassistant: homeAssistantSection.prefault({}),
  /** Alerts (device offline with hold-down, thresholds, outbox backlog and drops, upstream down): gateway/alerts/. */
  alerts: alertsSection.prefault({}),
  camera: cameraSchema.prefault({}),
  /** `edgeway fleet` (the operator's server, fleet/): read only by that command; a gateway ignores it. */
  fleet: fleetSection.optional(),
  roles: rolesSection.default({}),
  upstreams: z.array(upstreamSchema).default([]).refine(
    (ups) => new Set(ups.map((u) => u.name)).size === ups.length,
    'upstream names must be unique',
  ),
}).strict()

export type Config = z.infer<typeof configSchema>
export type UpstreamConfig = z.infer<typeof upstreamSchema>

export function jsonSchema(): unknown {
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' })
}
