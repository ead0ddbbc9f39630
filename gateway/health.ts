// Pure health evaluation: ok / degraded / failed with the reasons an operator can act on.
import type { OutboxStats } from './outbox/types.ts'
import type { UpstreamStatus } from './upstream/types.ts'

export type HealthStatus = 'ok' | 'degraded' | 'failed'

export interface HealthInput {
  outbox: OutboxStats | null
  outboxError: string | null
  upstreams: { name: string; status: UpstreamStatus }[]
  maxBytes: number
  now: number
  /** Reasons from optional parts (e.g. a dead camera source) that degrade the gateway but never fail it. */
  degraded?: string[]
  /** Active alerts (gateway/alerts/): each degrades the gateway with its text as the reason, never fails it. */
  alerts?: { text: string }[]
}

export interface Health {
  status: HealthStatus
  reasons: string[]
}

export function evaluateHealth(h: HealthInput): Health {
  const reasons: string[] = []
  let failed = false
  if (h.outboxError || !h.outbox) {
    failed = true
    reasons.push(`outbox unavailable: ${h.outboxError ?? 'no stats'}`)
  } else {
    const o = h.outbox
    if (o.diskFull) reasons.push(`outbox disk full: readings are not being acknowledged (${o.lastError ?? 'SQLITE_FULL'})`)
    if (o.bytes > h.maxBytes * 0.8) reasons.push(`outbox at ${Math.round((o.bytes / h.maxBytes) * 100)}% of outbox.maxBytes: oldest readings will be dropped`)
  }
  for (const u of h.upstreams) {
    if (!u.status.connected) {
      const lag = h.outbox?.upstreams.find((c) => c.upstream === u.name)?.lag ?? 0
      reasons.push(`upstream "${u.name}" down for ${Math.round((h.now - u.status.since) / 1000)} s (${lag} readings waiting${u.status.lastError ? `; last error: ${u.status.lastError}` : ''})`)
    }
  }
  if (h.degraded) reasons.push(...h.degraded)
  for (const a of h.alerts ?? []) reasons.push(a.text)
  return { status: failed ? 'failed' : reasons.length ? 'degraded' : 'ok', reasons }
}
