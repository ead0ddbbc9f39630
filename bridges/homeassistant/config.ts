// The `homeassistant:` section of edgeway.yaml (MQTT discovery for Home Assistant): validated here, one line in
// app/config/schema.ts. `nodeId` defaults to the gateway id, which is known only once the whole file is parsed,
// so it is resolved by resolveHomeAssistant() rather than by a zod default.
import { z } from 'zod'

/** Home Assistant accepts `[a-zA-Z0-9_-]` in node and object ids of a discovery topic. */
export const HA_ID_RE = /^[A-Za-z0-9_-]{1,64}$/

export const homeAssistantSection = z.object({
  /** Publish discovery configs, availability and state for Home Assistant on the embedded broker. */
  enabled: z.boolean().default(false),
  /** Home Assistant's discovery prefix (its MQTT integration's setting; `homeassistant` unless changed there). */
  discoveryPrefix: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'one topic level of letters, digits, "_" and "-"').default('homeassistant'),
  /** The node id in every discovery topic and in the gateway's own topics (`edgeway/<nodeId>/...`). Default: gateway.id. */
  nodeId: z.string().regex(HA_ID_RE, 'letters, digits, "_" and "-", 1 to 64 characters (Home Assistant\'s node id alphabet)').optional(),
  /**
   * Home Assistant's birth message (`<prefix>/status` `online`) makes the gateway republish everything, at most once
   * per this many seconds: a later birth waits for the end of the window, a flood of them costs one republish.
   */
  birthCooldownSeconds: z.number().min(0.1).max(3600).default(10),
}).strict()

export type HomeAssistantConfig = z.infer<typeof homeAssistantSection>

export interface ResolvedHomeAssistant {
  discoveryPrefix: string
  nodeId: string
  birthCooldownMs: number
}

/** The gateway id may contain "." (HA's node ids may not): it becomes "_". */
export function resolveHomeAssistant(c: HomeAssistantConfig, gatewayId: string): ResolvedHomeAssistant {
  return {
    discoveryPrefix: c.discoveryPrefix,
    nodeId: c.nodeId ?? gatewayId.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64),
    birthCooldownMs: Math.round(c.birthCooldownSeconds * 1000),
  }
}
