// Who a connection is, fixed at CONNECT: the principal every later act of it (publish, subscribe, its will, its
// stored session after a restart) is checked as. Pure: the broker asks the registry and hands the answers in.
import { DEVICE_ID_RE } from '../readings.ts'
import { mayPublish, maySubscribe, type ClassifiedTopic, type Decision } from './policy.ts'
import { ANONYMOUS_ROLE, deniedSubscribe, mayPublishAs, maySubscribeAs, type Role } from './roles.ts'

export { ANONYMOUS_ROLE }

export type Principal =
  /** A registered device that logged in with its secret: confined to devices/<id>/. */
  | { kind: 'device'; id: string }
  /** An integration client (Home Assistant, Node-RED, a script): what its role allows. */
  | { kind: 'client'; name: string; role: Role }
  /** mqtt.allowAnonymous: a client without credentials acts as the device named by its client id, under its ACL. */
  | { kind: 'anonymous'; id: string }
  /** mqtt.openBroker (lab): no ACL beyond the deny rules of the role named `anonymous`. */
  | { kind: 'open'; id: string }

/** How a principal is written where it outlives the connection (stored wills and sessions). */
export function ownerKey(p: Principal): string {
  return p.kind === 'client' ? `client:${p.name}` : `${p.kind}:${p.id}`
}

export interface OwnerRef { kind: Principal['kind']; id: string }

export function parseOwnerKey(key: unknown): OwnerRef | null {
  if (typeof key !== 'string') return null
  const i = key.indexOf(':')
  const kind = key.slice(0, i)
  if (i <= 0 || !(kind === 'device' || kind === 'client' || kind === 'anonymous' || kind === 'open')) return null
  return { kind, id: key.slice(i + 1) }
}

/**
 * The identity a client id belongs to: `<id>` or `<id>:<suffix>` (several connections of one device). ":" cannot
 * occur in an id, so `sensor-1` never claims `sensor-1-b`'s ids.
 */
export function clientIdNamespace(clientId: string): string {
  const i = clientId.indexOf(':')
  return i < 0 ? clientId : clientId.slice(0, i)
}

/** The device whose presence a connection counts for (none for an integration client). */
export function presenceDevice(p: Principal): string | null {
  if (p.kind === 'client') return null
  return DEVICE_ID_RE.test(p.id) ? p.id : null
}

/**
 * Whether `p` may use this client id. `requested` is what the client sent ('' = let the broker assign one).
 * `reserved(id)`: a registered device or integration client has that name. A device uses its own namespace only;
 * anyone else may use any id outside every registered identity's namespace.
 */
export function clientIdAllowed(p: Principal, requested: string, reserved: (id: string) => boolean): Decision {
  if (requested === '') return { ok: true }
  const ns = clientIdNamespace(requested)
  if (p.kind === 'device') {
    return ns === p.id ? { ok: true } : { ok: false, reason: `device "${p.id}" must use client id "${p.id}" or "${p.id}:<suffix>", not "${requested.slice(0, 80)}"` }
  }
  const self = p.kind === 'client' ? p.name : null
  if (ns !== self && reserved(ns)) return { ok: false, reason: `client id "${requested.slice(0, 80)}" belongs to the registered identity "${ns}"` }
  return { ok: true }
}

export function mayPublishAsPrincipal(p: Principal, topic: string, t: ClassifiedTopic | null, anonymousRole: Role | undefined): Decision {
  switch (p.kind) {
    case 'device': return mayPublish(p.id, topic, t)
    case 'client': return mayPublishAs(p.role, p.name, topic)
    case 'anonymous': {
      const d = mayPublish(p.id, topic, t)
      return d.ok && anonymousRole ? publishDenied(anonymousRole, p.id, topic) : d
    }
    case 'open': return anonymousRole ? publishDenied(anonymousRole, p.id, topic) : { ok: true }
  }
}

export function maySubscribeAsPrincipal(p: Principal, filter: string, anonymousRole: Role | undefined): Decision {
  switch (p.kind) {
    case 'device': return maySubscribe(p.id, filter)
    case 'client': return maySubscribeAs(p.role, p.name, filter)
    case 'anonymous': {
      const d = maySubscribe(p.id, filter)
      return d.ok && anonymousRole ? subscribeDenied(anonymousRole, p.id, filter) : d
    }
    case 'open': return anonymousRole ? subscribeDenied(anonymousRole, p.id, filter) : { ok: true }
  }
}

function subscribeDenied(role: Role, name: string, filter: string): Decision {
  const reason = deniedSubscribe(role, name, filter)
  return reason === null ? { ok: true } : { ok: false, reason }
}

/** Only the deny rules of a role apply (the lab modes): its deny rules over an allow-everything rule. */
function publishDenied(role: Role, name: string, topic: string): Decision {
  if (topic.startsWith('$')) return { ok: true } // `#` does not match $-topics (MQTT 4.7.2); the device ACL refuses them
  return mayPublishAs({ name: role.name, rules: [...role.rules.filter((r) => r.effect === 'deny'), { effect: 'allow', action: 'publish', topic: '#' }] }, name, topic)
}
