// The `alerts:` section of edgeway.yaml (one line in app/config/schema.ts), and the mapping of the deprecated
// `xmpp.alerts.thresholds` key into it: one rule set, evaluated once, for the dashboard, health, XMPP and AMQP.
import { z } from 'zod'
import { DEVICE_ID_OR_ALL_RE } from '../readings.ts'

const deviceId = z.string().regex(DEVICE_ID_OR_ALL_RE, 'a device id or "*"')

export const thresholdRule = z.object({
  /** The device this applies to; absent or "*": every device that reports the metric. */
  device: deviceId.optional(),
  metric: z.string().min(1).max(64),
  /** Raised when a reading is above / below this value. */
  above: z.number().optional(),
  below: z.number().optional(),
  /** Cleared only once the value is this far back inside the limit (damps a value hovering at the edge). */
  hysteresis: z.number().min(0).default(0),
  /** The value must stay out of range this long before the alert is raised, and back in range as long before it clears. */
  holdSeconds: z.number().min(0).default(0),
  severity: z.enum(['warning', 'critical']).default('warning'),
}).strict().refine((t) => t.above !== undefined || t.below !== undefined, 'a threshold needs `above` or `below`')
  .refine((t) => t.above === undefined || t.below === undefined || t.below < t.above - t.hysteresis || t.below > t.above,
    'with both `above` and `below`, keep `below` under `above` minus `hysteresis` (or use two rules)')

export const alertsSection = z.object({
  /** Device offline alerts (a device seen online since the gateway started, and still registered). */
  offline: z.boolean().default(true),
  /**
   * Hold-down: raised once a device has been offline this long (or dropped again within it: flapping); cleared once
   * it has stayed online this long. A device back before that raises nothing.
   */
  offlineHoldSeconds: z.number().min(0).max(86400).default(30),
  /** Threshold rules per metric (this replaces `xmpp.alerts.thresholds`). */
  thresholds: z.array(thresholdRule).default([]),
  /** Raised while the outbox's oldest reading has waited longer than this for an upstream (0: off). */
  backlogAgeSeconds: z.number().min(0).default(600),
  /** Raised when retention drops readings; cleared after this long without another drop. */
  dropsClearSeconds: z.number().min(1).default(600),
  /** Raised when an upstream has been down longer than this (0: off). */
  upstreamDownSeconds: z.number().min(0).default(60),
}).strict()

export type AlertsConfig = z.infer<typeof alertsSection>
export type ThresholdRule = z.infer<typeof thresholdRule>

/** The deprecated `xmpp.alerts.thresholds` entries: `devices` is a list there. */
export interface LegacyThreshold { metric: string; above?: number | undefined; below?: number | undefined; devices?: string[] | undefined }

/** The start-up warning for the deprecated key: where the rules go, and whether they still apply meanwhile. */
export function legacyThresholdsWarning(xmppEnabled: boolean): string {
  return 'xmpp.alerts.thresholds is deprecated and will be removed in the next release: ' +
    'move these rules to alerts.thresholds (same metric/above/below; `devices: [a, b]` becomes one rule per device with `device: a`). ' +
    (xmppEnabled ? 'They are applied as alerts.thresholds rules for now' : 'They are ignored while xmpp.enabled is false')
}

/** The rules the engine runs: alerts.thresholds plus the deprecated XMPP ones, one rule per named device. */
export function effectiveAlerts(alerts: AlertsConfig, legacy: LegacyThreshold[]): AlertsConfig {
  const mapped: ThresholdRule[] = legacy.flatMap((t) => {
    const base = { metric: t.metric, hysteresis: 0, holdSeconds: 0, severity: 'warning' as const, ...(t.above !== undefined ? { above: t.above } : {}), ...(t.below !== undefined ? { below: t.below } : {}) }
    if (!t.devices || t.devices.includes('*')) return [base]
    return t.devices.map((device) => ({ ...base, device }))
  })
  return mapped.length ? { ...alerts, thresholds: [...alerts.thresholds, ...mapped] } : alerts
}
