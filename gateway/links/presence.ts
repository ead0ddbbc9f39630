// One way to say a device went online or offline, for every link: the registry's live state, the bus event the
// dashboard, alerts, XMPP and AMQP follow, and one log line. (It was written out three times, per link.)
import type { Logger } from 'pino'
import type { GatewayBus } from '../events.ts'

export interface PresenceDeps {
  registry: { setOnline(id: string, online: boolean, link: string): void }
  bus: GatewayBus
  log: Logger
}

export interface PresenceChange {
  device: string
  link: string
  /** The connection or port: an MQTT client id, a serial path. */
  clientId: string
  online: boolean
  /** Why it went offline (closed, port lost, silent, gateway stopping). */
  reason?: string
  /** The log line; none when the caller logs the change itself. */
  message?: string
  /** Extra fields for the log line. */
  fields?: Record<string, unknown>
  /** false: not written to the registry (an anonymous MQTT client's id is not a registered device). */
  record?: boolean
}

export function reportPresence(d: PresenceDeps, c: PresenceChange): void {
  if (c.record !== false) try { d.registry.setOnline(c.device, c.online, c.link) } catch (err) { d.log.warn({ err: (err as Error).message, device: c.device }, 'registry update failed') }
  if (c.online) d.bus.safeEmit('deviceOnline', { device: c.device, link: c.link, clientId: c.clientId })
  else d.bus.safeEmit('deviceOffline', { device: c.device, link: c.link, clientId: c.clientId, reason: c.reason ?? 'unknown' })
  if (c.message) d.log.info({ ...c.fields, ...(c.online ? {} : { reason: c.reason }) }, c.message)
}
