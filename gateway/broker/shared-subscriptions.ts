// MQTT shared subscriptions (`$share/<group>/<filter>`, MQTT 5.0 section 4.8.2; taken from 3.1.1 clients too, as
// Mosquitto does), which aedes 2.0.0-beta.1 lacks. Each message matching a group's filter goes to one member.
//
// How it sits on aedes: a member's `$share/<group>/<filter>` is renamed (aedes-adapter's rewriteFilters) to
// `$edgeway-share/<group>/<filter>` before aedes sees the SUBSCRIBE, so aedes runs its own handler on it: the ACL
// hook (which judges the inner filter and joins the group), the session store, the SUBACK, UNSUBSCRIBE and the
// restore of a persistent session at reconnect. No client can publish to that name, so aedes' own subscription on it
// never delivers, and no retained message is sent when it is made (MQTT 5.0 4.8.2: a new shared subscription gets
// no retained messages). Delivery is here: one aedes subscription per group on the inner filter, whose listener
// picks a member and hands it a copy through the member client's publish (its deliver functions, so QoS 1/2 in
// flight, the session's outgoing queue and the gateway's limits apply as to any subscription).
import { mayMatchTelemetry } from './policy.ts'

export const SHARE_PREFIX = '$share/'
/** The name aedes holds a member's subscription under (in its client and in the session store). */
export const MEMBER_PREFIX = '$edgeway-share/'

export interface ShareName { group: string; filter: string }

/** `$share/<group>/<filter>` -> its parts; 'malformed' when it breaks MQTT-4.8.2-1/2; null when it is no share. */
export function parseShare(topic: string): ShareName | 'malformed' | null {
  if (!topic.startsWith(SHARE_PREFIX)) return null
  const slash = topic.indexOf('/', SHARE_PREFIX.length)
  if (slash < 0) return 'malformed'
  const group = topic.slice(SHARE_PREFIX.length, slash)
  const filter = topic.slice(slash + 1)
  if (group === '' || group.includes('+') || group.includes('#') || filter === '') return 'malformed'
  return { group, filter }
}

/** The member name of a share, and back (null: not a member name). */
export const memberTopic = (s: ShareName): string => `${MEMBER_PREFIX}${s.group}/${s.filter}`
export function parseMemberTopic(topic: string): ShareName | null {
  if (!topic.startsWith(MEMBER_PREFIX)) return null
  const s = parseShare(SHARE_PREFIX + topic.slice(MEMBER_PREFIX.length))
  return s === null || s === 'malformed' ? null : s
}

/** Topics a client must not publish to: they would reach shared subscriptions around their dispatcher. */
export const isShareTopic = (topic: string): boolean => topic.startsWith(SHARE_PREFIX) || topic.startsWith(MEMBER_PREFIX)

/** What the filter rewrite hands aedes for a client's `$share/` filter that breaks MQTT-4.8.2: refused as malformed. */
const MALFORMED = SHARE_PREFIX

type QoS = 0 | 1 | 2

/** A PUBLISH as aedes emits it to subscriptions (an aedes-packet Packet). */
export interface SharedPacket {
  topic: string
  payload: Buffer | string
  qos: number
  retain: boolean
  properties?: Record<string, unknown>
  messageExpiry?: number
}

/** A copy for one member (client.publish makes it an aedes Packet of its own: a fresh broker counter). */
export interface MemberMessage {
  cmd: 'publish'
  topic: string
  payload: Buffer | string
  qos: QoS
  retain: boolean
  dup: false
  properties?: Record<string, unknown>
  messageExpiry?: number
  brokerId?: string
  brokerCounter?: number
}

/** What the dispatcher needs of an aedes client. */
export interface MemberClient {
  readonly id: string
  readonly clean: boolean
  publish(message: MemberMessage, done: (err?: Error) => void): void
}

type Listener = (packet: SharedPacket, cb: () => void) => void

/** What it needs of aedes and of the session store. */
export interface ShareBroker {
  readonly id: string
  subscribe(filter: string, listener: Listener, done: () => void): void
  unsubscribe(filter: string, listener: Listener, done: () => void): void
}
export interface ShareQueue {
  outgoingEnqueue(sub: { clientId: string }, packet: MemberMessage): Promise<unknown>
}

/** The subscription options of a member (MQTT 5: granted QoS, Retain As Published, Subscription Identifier). */
export interface MemberOptions { qos: QoS; rap: boolean; si: number | undefined }

interface Member extends MemberOptions {
  clientId: string
  /** The live connection, or null: a persistent session that is not connected (it may be queued for). */
  client: MemberClient | null
}

interface Group {
  share: ShareName
  members: Member[]
  /** Round robin: where the next search for a member starts. */
  next: number
  listener: Listener
  /** `+` or `#` first: not matched by $-topics (MQTT-4.7.2-1), as aedes does for its own subscriptions. */
  skipsDollar: boolean
  telemetry: boolean
}

export interface SharedSubscriptionsDeps {
  /** Whether aedes may write to this client now (adapter's readyForDelivery). */
  deliverable: (client: MemberClient) => boolean
  warn: (fields: Record<string, unknown>, msg: string) => void
}

export class SharedSubscriptions {
  private readonly groups = new Map<string, Group>()
  /** client id -> keys of the groups it is a member of */
  private readonly memberships = new Map<string, Set<string>>()
  private telemetryGroups = 0
  private broker: ShareBroker | null = null
  private queue: ShareQueue | null = null
  private counter = 0

  constructor(private readonly d: SharedSubscriptionsDeps) {}

  attach(broker: ShareBroker, queue: ShareQueue): void {
    this.broker = broker
    this.queue = queue
  }

  /** Whether some group's filter can match a telemetry topic (the fast path must then hand telemetry to aedes). */
  get watchesTelemetry(): boolean { return this.telemetryGroups > 0 }

  /** The filter aedes is to see for a filter of a client's SUBSCRIBE or UNSUBSCRIBE (see aedes-adapter's rewriteFilters). */
  rewrite(filter: string, op: 'subscribe' | 'unsubscribe', noLocal: boolean): string | { protocolError: string } {
    // a client naming the internal form directly gets what a malformed share gets
    if (filter.startsWith(MEMBER_PREFIX)) return MALFORMED
    const s = parseShare(filter)
    // malformed: left as it is, aedes refuses it (v5: SUBACK 0x8F via the adapter; 3.1.1: the ACL hook, 0x80)
    if (s === null || s === 'malformed') return filter
    if (op === 'subscribe' && noLocal) return { protocolError: `No Local set on the shared subscription "${filter.slice(0, 120)}" (a protocol error, MQTT-3.8.3-4)` }
    return memberTopic(s)
  }

  /** A client (live, or restoring its session) joins the group: after the ACL allowed the inner filter. */
  join(client: MemberClient, share: ShareName, opts: MemberOptions): void {
    const g = this.group(share)
    const m = g.members.find((x) => x.clientId === client.id)
    if (m) Object.assign(m, opts, { client })
    else g.members.push({ clientId: client.id, client, ...opts })
    this.note(client.id, this.keyOf(share))
  }

  /** A persistent session that is not connected (restored at start): a member that can be queued for. */
  joinOffline(clientId: string, share: ShareName, opts: MemberOptions): void {
    const g = this.group(share)
    if (g.members.some((x) => x.clientId === clientId)) return
    g.members.push({ clientId, client: null, ...opts })
    this.note(clientId, this.keyOf(share))
  }

  /** aedes unsubscribed these filters of the client (UNSUBSCRIBE, or a clean session's end). */
  unsubscribed(client: MemberClient, topics: readonly string[]): void {
    for (const t of topics) {
      const s = parseMemberTopic(t)
      if (!s) continue
      const g = this.groups.get(this.keyOf(s))
      const m = g?.members.find((x) => x.clientId === client.id)
      // (a takeover's new connection may already hold the membership)
      if (g && m && m.client === client) this.remove(g, m)
    }
  }

  /** The connection ended: a persistent session stays a member (queued for while no member is connected). */
  clientGone(client: MemberClient): void {
    const keys = this.memberships.get(client.id)
    if (!keys) return
    for (const key of [...keys]) {
      const g = this.groups.get(key)
      const m = g?.members.find((x) => x.clientId === client.id)
      if (!g || !m || m.client !== client) continue
      if (client.clean) this.remove(g, m)
      else m.client = null
    }
  }

  /** The client id's session is gone (clean start, expiry, revocation): none of its memberships stay. */
  forget(clientId: string): void {
    const keys = this.memberships.get(clientId)
    if (!keys) return
    for (const key of [...keys]) {
      const g = this.groups.get(key)
      const m = g?.members.find((x) => x.clientId === clientId)
      if (g && m) this.remove(g, m)
    }
  }

  private keyOf(s: ShareName): string { return `${s.group}/${s.filter}` }

  private note(clientId: string, key: string): void {
    let keys = this.memberships.get(clientId)
    if (!keys) this.memberships.set(clientId, keys = new Set())
    keys.add(key)
  }

  private group(share: ShareName): Group {
    const key = this.keyOf(share)
    let g = this.groups.get(key)
    if (g) return g
    const broker = this.broker
    if (!broker) throw new Error('shared subscriptions: not attached to the broker')
    const first = share.filter.charCodeAt(0)
    const created: Group = {
      share, members: [], next: 0,
      listener: (packet, cb) => this.dispatch(created, packet, cb),
      skipsDollar: first === 0x2b || first === 0x23,
      telemetry: mayMatchTelemetry(share.filter),
    }
    g = created
    this.groups.set(key, g)
    if (g.telemetry) this.telemetryGroups++
    broker.subscribe(share.filter, g.listener, () => undefined)
    return g
  }

  private remove(g: Group, m: Member): void {
    const i = g.members.indexOf(m)
    if (i < 0) return
    g.members.splice(i, 1)
    if (g.next > i) g.next--
    const key = this.keyOf(g.share)
    const keys = this.memberships.get(m.clientId)
    keys?.delete(key)
    if (keys?.size === 0) this.memberships.delete(m.clientId)
    if (g.members.length > 0) return
    this.groups.delete(key)
    if (g.telemetry) this.telemetryGroups--
    this.broker?.unsubscribe(g.share.filter, g.listener, () => undefined)
  }

  /**
   * One member gets the message: the next connected one in turn (round robin); with none connected, the next
   * persistent session in turn has a QoS 1/2 message queued (it gets it at reconnect); otherwise it is dropped, as
   * for a filter nobody subscribes to.
   */
  private dispatch(g: Group, packet: SharedPacket, cb: () => void): void {
    if (g.skipsDollar && packet.topic.charCodeAt(0) === 0x24) return cb()
    const n = g.members.length
    let offline = -1
    for (let k = 0; k < n; k++) {
      const i = (g.next + k) % n
      const m = g.members[i]!
      if (m.client && this.d.deliverable(m.client)) {
        g.next = (i + 1) % n
        m.client.publish(this.copy(m, packet), () => cb())
        return
      }
      if (offline < 0 && m.client === null) offline = i
    }
    const m = offline >= 0 ? g.members[offline]! : null
    const queue = this.queue
    if (!m || !queue || Math.min(m.qos, packet.qos) === 0) return cb()
    g.next = (offline + 1) % n
    // a broker id of its own, so these entries never collide with aedes' own (brokerId, brokerCounter) in a queue
    const queued: MemberMessage = { ...this.copy(m, packet), brokerId: `${this.broker!.id}:share`, brokerCounter: ++this.counter }
    queue.outgoingEnqueue({ clientId: m.clientId }, queued).then(() => cb(), (err: Error) => {
      this.d.warn({ clientId: m.clientId, topic: packet.topic, err: err.message }, 'shared subscription: message not queued')
      cb()
    })
  }

  /** The member's copy: QoS the lesser of granted and published, retain only with Retain As Published, its identifier. */
  private copy(m: Member, packet: SharedPacket): MemberMessage {
    const props = m.si !== undefined ? { ...packet.properties, subscriptionIdentifier: m.si } : packet.properties
    return {
      cmd: 'publish', topic: packet.topic, payload: packet.payload,
      qos: Math.min(m.qos, packet.qos) as QoS, retain: m.rap ? packet.retain : false, dup: false,
      ...(props ? { properties: props } : {}),
      ...(packet.messageExpiry !== undefined ? { messageExpiry: packet.messageExpiry } : {}),
    }
  }
}
