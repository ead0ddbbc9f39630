// Every aedes internal the gateway relies on, in one place: aedes 2.0.0-beta.1's Client and broker fields and methods
// that are not part of its documented API (the telemetry fast path, MQTT 5 reason codes the hooks cannot express,
// per-connection topic aliases, delayed wills). Each accessor checks what it reads; test/aedes-adapter.test.ts runs
// every one of them against the installed aedes with real MQTT 3.1.1 and MQTT 5 connections, so an aedes upgrade that
// moves one fails there, loudly, instead of silently turning a check off.
import type { EventEmitter } from 'node:events'
import mqttPacket from 'mqtt-packet'
import { packetBytes } from '../mqtt-wire.ts'

/** The parts of an aedes 2 Client the gateway reads (all but id/closed/clean are private to aedes). */
interface ClientInternals {
  _parser: EventEmitter
  _keepaliveInterval: number
  _keepaliveTimer: { refresh(): void } | null
  connected: boolean
  closed: boolean
  conn: { write(b: Buffer, cb?: () => void): unknown }
  /** null until CONNECT is accepted; 3, 4 or 5 after. */
  version: number | null
  /** MQTT 5 inbound topic aliases of this connection (alias -> topic), filled by aedes' publish handler. */
  _topicAliases: Map<number, string>
  /** MQTT 5 Request Problem Information (false: no reason strings on acks). */
  _requestProblemInformation?: boolean
  /** Latch aedes' read loop checks: set, it reads no more from the socket (an oversized packet is being refused). */
  _rejectingPacketTooLarge: boolean
  /** aedes 2: DISCONNECT with a reason code (v5 only) and close. */
  disconnect(opts: { reasonCode: number; properties?: { reasonString?: string } }, done?: () => void): void
  close(done?: () => void): void
  /** Set once the CONNACK is written; `connected` only once aedes finished the connect (queued messages sent). */
  connackSent?: boolean
  broker: { topicAliasMaximum: number }
  /** MQTT 5: the client's Maximum Packet Size (aedes 2 records it but does not enforce it). */
  maximumPacketSize?: number
  deliver0(packet: OutboundPacket, cb: () => void): void
  deliverQoS(packet: OutboundPacket, cb: () => void): void
}

interface OutboundPacket { topic: string; payload: Buffer | string; qos: number; properties?: object }

/** MQTT 5 reason codes the gateway sends (MQTT 5.0 section 2.4). */
export const RC = {
  SUCCESS: 0x00,
  UNSPECIFIED_ERROR: 0x80,
  PROTOCOL_ERROR: 0x82,
  IMPLEMENTATION_SPECIFIC_ERROR: 0x83,
  CLIENT_ID_NOT_VALID: 0x85,
  BAD_CREDENTIALS: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_SHUTTING_DOWN: 0x8b,
  SESSION_TAKEN_OVER: 0x8e,
  TOPIC_FILTER_INVALID: 0x8f,
  RECEIVE_MAXIMUM_EXCEEDED: 0x93,
  PACKET_TOO_LARGE: 0x95,
  QUOTA_EXCEEDED: 0x97,
  ADMINISTRATIVE_ACTION: 0x98,
  PAYLOAD_FORMAT_INVALID: 0x99,
} as const

const REQUIRED = ['_parser', '_keepaliveInterval', 'conn', 'connected', '_topicAliases', 'disconnect'] as const

function internals(client: object): ClientInternals | null {
  const c = client as Partial<ClientInternals>
  for (const k of REQUIRED) if (c[k] === undefined) return null
  if (typeof c._parser?.listeners !== 'function' || !(c._topicAliases instanceof Map) || typeof c.disconnect !== 'function') return null
  return c as ClientInternals
}

/** Throws, naming what is missing, when an aedes Client lacks an internal the gateway relies on. */
export function assertClientInternals(client: object): void {
  const c = client as Record<string, unknown>
  const missing = REQUIRED.filter((k) => c[k] === undefined)
  if (missing.length) throw new Error(`aedes client lacks ${missing.join(', ')}: aedes internals changed (see gateway/broker/aedes-adapter.ts)`)
}

/** The protocol version of an accepted connection (3, 4 or 5), or null before its CONNECT was accepted. */
export function protocolVersion(client: object): number | null {
  const v = (client as { version?: unknown }).version
  return typeof v === 'number' ? v : null
}

export const isV5 = (client: object): boolean => protocolVersion(client) === 5

/** What the fast path needs of one connection. */
export interface FastConnection {
  readonly connected: boolean
  readonly v5: boolean
  write(b: Buffer): unknown
  /** A packet counts as activity for the keepalive (aedes refreshes its timer in its own packet handler). */
  touch(): void
  /** Whether the client may get reason strings (MQTT 5 Request Problem Information). */
  readonly problemInfo: boolean
  /** resolveTopicAlias for this connection, without looking its internals up again at every publish. */
  resolveTopicAlias(packet: AliasedPacket): string | null
}

/**
 * Puts `take` in front of aedes' packet listener on the client's parser: a packet `take` returns true for never
 * reaches aedes. Returns null (nothing installed) if the internals are not there.
 */
export function interceptPackets(client: object, take: (packet: { cmd: string }) => boolean): FastConnection | null {
  const c = internals(client)
  if (!c || typeof c._keepaliveInterval !== 'number') return null
  const parser = c._parser
  const enqueue = parser.listeners('packet')[0] as ((this: EventEmitter, p: unknown) => void) | undefined
  if (!enqueue) return null
  parser.removeListener('packet', enqueue)
  parser.on('packet', function (this: EventEmitter, packet: { cmd: string }) {
    if (!take(packet)) enqueue.call(this, packet)
  })
  return {
    get connected() { return c.connected },
    get v5() { return c.version === 5 },
    get problemInfo() { return c._requestProblemInformation !== false },
    write: (b) => c.conn.write(b),
    touch: () => { if (c._keepaliveInterval > 0) c._keepaliveTimer?.refresh() },
    resolveTopicAlias: (packet) => resolveAlias(c, packet),
  }
}

/**
 * MQTT 5 inbound topic alias, resolved as aedes' publish handler does (the fast path takes the packet before aedes
 * sees it, so the alias must land in the same map): returns the topic, or null when aedes must handle the packet
 * (out of range or unknown alias: aedes answers with DISCONNECT 0x94). The alias is removed from the packet.
 */
export function resolveTopicAlias(client: object, packet: AliasedPacket): string | null {
  if (packet.properties?.topicAlias === undefined) return packet.topic
  const c = internals(client)
  return c ? resolveAlias(c, packet) : null
}

type AliasedPacket = { topic: string; properties?: { topicAlias?: number } }

function resolveAlias(c: ClientInternals, packet: AliasedPacket): string | null {
  const alias = packet.properties?.topicAlias
  if (alias === undefined) return packet.topic
  if (!(alias >= 1 && alias <= c.broker.topicAliasMaximum)) return null
  let topic = packet.topic
  if (topic.length > 0) {
    if (topic.includes('#') || topic.includes('+')) return null
    c._topicAliases.set(alias, topic)
  } else {
    const t = c._topicAliases.get(alias)
    if (t === undefined) return null
    topic = t
  }
  packet.topic = topic
  packet.properties!.topicAlias = undefined
  return topic
}

/** A v5 DISCONNECT with a reason code and string, then the close (v3: just the close). */
export function disconnectWithReason(client: object, reasonCode: number, reasonString: string, done?: () => void): void {
  const c = internals(client)
  if (!c) { (client as { close(cb?: () => void): void }).close(done); return }
  sendDisconnect(c, reasonCode, reasonString, done)
}

/**
 * aedes' disconnect() writes the DISCONNECT only once the connect finished (`connected`); between the CONNACK and
 * then (aedes is still sending the session's queued messages) it would just close. The packet is written directly then.
 */
function sendDisconnect(c: ClientInternals, reasonCode: number, reasonString: string, done?: () => void): void {
  if (earlyV5(c)) earlyDisconnect(c, reasonCode, reasonString, done)
  else c.disconnect({ reasonCode, properties: { reasonString } }, done)
}

/**
 * aedes 2 sends DISCONNECT 0x8E (takeover) and 0x8B (shutdown) without a reason string: this wraps the client's
 * disconnect so that those carry one.
 */
export function addDisconnectReasons(client: object, reasons: Readonly<Record<number, string>>): void {
  const c = internals(client)
  if (!c) return
  const disconnect = c.disconnect
  c.disconnect = function (this: ClientInternals, opts, done) {
    const o = typeof opts === 'object' && opts !== null ? opts : { reasonCode: 0 }
    const cb = typeof opts === 'function' ? opts as () => void : done
    const why = o.properties?.reasonString ?? reasons[o.reasonCode]
    if (why !== undefined && earlyV5(this)) return earlyDisconnect(this, o.reasonCode, why, cb)
    return disconnect.call(this, why !== undefined && !o.properties ? { ...o, properties: { reasonString: why } } : o, cb)
  }
}

/** Between its CONNACK and aedes' end of the connect: aedes' disconnect() would close without a DISCONNECT. */
const earlyV5 = (c: ClientInternals): boolean => !c.connected && c.version === 5 && c.connackSent === true && !c.closed

function earlyDisconnect(c: ClientInternals, reasonCode: number, reasonString: string, done?: () => void): void {
  // closed once written: the socket's writes are corked until the next tick (net/coalesce.ts), a close now would drop it
  c.conn.write(mqttPacket.generate({ cmd: 'disconnect', reasonCode, properties: { reasonString } } as mqttPacket.Packet, { protocolVersion: 5 }), () => c.close(done))
}

/**
 * An oversized packet on a connected v5 connection: aedes reads no more from the socket, the client gets
 * DISCONNECT 0x95 with the reason. Returns false (the caller closes the connection its own way) when the client is
 * not a connected v5 one. Idempotent.
 */
export function refusePacketTooLarge(client: object, reasonString: string): boolean {
  const c = internals(client)
  if (!c || c.version !== 5 || !(c.connected || c.connackSent) || c.closed) return false
  if (c._rejectingPacketTooLarge) return true
  c._rejectingPacketTooLarge = true
  sendDisconnect(c, RC.PACKET_TOO_LARGE, reasonString)
  return true
}

/**
 * In authorizePublish, for a v5 publish the gateway answers itself (PUBACK/PUBREC 0x99): marked, aedes' enqueue step
 * neither publishes nor acks it (aedes sets the same mark for its own 0x87 answer).
 */
export function answeredByGateway(packet: object): void {
  ;(packet as { _notAuthorized?: boolean })._notAuthorized = true
}

/** An MQTT 5 PUBACK (QoS 1) or PUBREC (QoS 2) with a reason code and, if allowed, a reason string. */
export function encodeAck(qos: 1 | 2, messageId: number, reasonCode: number, reasonString: string | null): Buffer {
  return mqttPacket.generate({
    cmd: qos === 1 ? 'puback' : 'pubrec', messageId, reasonCode,
    ...(reasonString ? { properties: { reasonString: reasonString.slice(0, 200) } } : {}),
  } as mqttPacket.Packet, { protocolVersion: 5 })
}

/** Writes a v5 ack on the client's connection (if still connected). */
export function writeAck(client: object, qos: 1 | 2, messageId: number, reasonCode: number, reasonString: string): void {
  const c = internals(client)
  if (!c || !c.connected) return
  ;(c.conn as TappedStream)[WRITE_TAP]?.answered(qos === 1 ? 'puback' : 'pubrec', messageId, reasonCode)
  c.conn.write(encodeAck(qos, messageId, reasonCode, c._requestProblemInformation !== false ? reasonString : null))
}

/** Whether aedes 2 holds a Will Delay timer for this client id. */
export function hasDelayedWill(broker: object, clientId: string): boolean {
  const b = broker as { delayedWills?: Map<string, unknown> }
  return b.delayedWills instanceof Map && b.delayedWills.has(clientId)
}

/** aedes 2's pending Will Delay timer for a client id: cancelled (revocation). */
export function cancelDelayedWill(broker: object, clientId: string): boolean {
  const b = broker as { delayedWills?: Map<string, unknown>; clearDelayedWill?: (id: string) => void }
  if (!(b.delayedWills instanceof Map) || typeof b.clearDelayedWill !== 'function') {
    throw new Error('aedes broker lacks delayedWills/clearDelayedWill: aedes internals changed (see gateway/broker/aedes-adapter.ts)')
  }
  const had = b.delayedWills.has(clientId)
  b.clearDelayedWill(clientId)
  return had
}

/**
 * aedes 2.0.0-beta.1 keys clients and per-client subscriptions by wire strings in plain objects (1.2.0's fix for
 * GHSA-52qw-whmv-87c5, Object.create(null), is not in the 2.0 line): a client id or topic filter that names an
 * Object.prototype member ("constructor", "__proto__", "toString" ...) crashes the broker. Such names are refused
 * before aedes sees them.
 */
export function unsafeKey(s: string): boolean {
  return s in Object.prototype
}

/** Will-only MQTT 5 properties that must not travel in the will's PUBLISH (aedes 2.0.0-beta.1 forwards them). */
export function stripWillProperties(will: { properties?: Record<string, unknown> }): void {
  const p = will.properties
  if (p && 'willDelayInterval' in p) delete p.willDelayInterval
}

/** Total size of a v5 PUBLISH without properties (exact), or of the encoded packet when it has properties. */
function publishSize(p: OutboundPacket): number {
  if (p.properties && Object.keys(p.properties).length > 0) {
    return mqttPacket.generate({ cmd: 'publish', topic: p.topic, payload: p.payload, qos: p.qos as 0 | 1 | 2, messageId: 1, retain: false, dup: false, properties: p.properties } as mqttPacket.Packet, { protocolVersion: 5 }).length
  }
  const payload = typeof p.payload === 'string' ? Buffer.byteLength(p.payload) : p.payload.length
  return packetBytes(2 + Buffer.byteLength(p.topic) + (p.qos > 0 ? 2 : 0) + 1 + payload)
}

/**
 * MQTT 5 Maximum Packet Size of the client (MQTT-3.1.2-24): a PUBLISH larger than it is not sent but discarded, as if
 * it had been delivered. aedes 2 does not enforce it; this wraps the client's two deliver functions (before any
 * subscription captures them: call right after aedes.handle). Not covered here: a persistent session's queue replayed
 * at reconnect, which aedes' connect handler writes directly (emptyQueue: outbound-flow.ts checks those through
 * tapWrites), and a dropped QoS 1/2 message of a persistent session stays in its queue (aedes has no "discard this
 * entry" step before a packet id is assigned) until that replay drops it.
 */
export function limitOutboundPacketSize(client: object, dropped: (topic: string, size: number, max: number) => void): void {
  const c = internals(client)
  if (!c || typeof c.deliver0 !== 'function' || typeof c.deliverQoS !== 'function') {
    throw new Error('aedes client lacks deliver0/deliverQoS: aedes internals changed (see gateway/broker/aedes-adapter.ts)')
  }
  const wrap = (deliver: (packet: OutboundPacket, cb: () => void) => void) => function (this: unknown, packet: OutboundPacket, cb: () => void): void {
    const max = c.maximumPacketSize
    if (max !== undefined && max > 0 && c.version === 5) {
      const size = publishSize(packet)
      if (size > max) { dropped(packet.topic, size, max); setImmediate(cb); return }
    }
    deliver.call(this, packet, cb)
  }
  c.deliver0 = wrap(c.deliver0)
  c.deliverQoS = wrap(c.deliverQoS)
}

interface DedupedPacket { brokerId?: string; brokerCounter?: number; qos?: number; properties?: { subscriptionIdentifier?: unknown } }
type DedupeDeliver = (packet: DedupedPacket, cb: () => void) => void
interface DedupeInternals { duplicates: Record<string, number>; deliver0: DedupeDeliver; deliverQoS: DedupeDeliver }

/** The copies of one packet for overlapping subscriptions arrive within one emit: a short memory is enough. */
const RECENT = 32

/**
 * aedes' per-client dedupe (lib/client.js) forwards a packet only if its brokerCounter is above the last one the
 * client got. It is there for overlapping subscriptions (`a/#` and `a/b` deliver one packet twice), but counters are
 * assigned when a publish starts and packets reach subscribers when their asynchronous steps finish (the retained
 * store, the offline queue for QoS > 0): a retained or QoS 1 publish overtaken by a later one is silently lost for
 * every live subscriber of both (moscajs/aedes#994, #955; measured here: 50 retained server publishes, each followed
 * by a QoS 0 one, and none of the 50 arrived). This replaces the order check by "not among this client's last
 * RECENT deliveries", which keeps one copy per packet and loses none.
 * Copies carrying different MQTT 5 Subscription Identifiers are not duplicates: aedes would send one copy with one
 * identifier, where MQTT-3.3.4-3/4 want all of them; each goes out with its own, as Mosquitto does (MQTT-3.3.4-5).
 * test/broker-dedupe.test.ts shows the loss without it.
 */
export function installDedupe(client: object): boolean {
  const c = client as Partial<DedupeInternals>
  const dup = c.duplicates
  const orig0 = c.deliver0
  const origQ = c.deliverQoS
  if (typeof orig0 !== 'function' || typeof origQ !== 'function' || !dup || typeof dup !== 'object') return false
  let recent: string[] | null = null
  let next = 0
  const seen = new Set<string>()
  // aedes' own check then passes (counter - 1) or refuses (counter) as this memory decides.
  const decide = (p: DedupedPacket): void => {
    const id = p.brokerId
    const n = p.brokerCounter
    if (!id || typeof n !== 'number') return
    const si = p.properties?.subscriptionIdentifier
    const key = si === undefined ? `${id}:${n}` : `${id}:${n}:${String(si)}`
    if (seen.has(key)) { dup[id] = n; return }
    recent ??= new Array<string>(RECENT).fill('')
    seen.delete(recent[next]!)
    recent[next] = key
    next = (next + 1) % RECENT
    seen.add(key)
    dup[id] = n - 1
  }
  c.deliver0 = function deliver0(p, cb) { decide(p); orig0.call(this, p, cb) }
  // QoS 0 packets are passed on to deliver0 (this wrapper), which decides for them.
  c.deliverQoS = function deliverQoS(p, cb) { if (p.qos !== 0) decide(p); origQ.call(this, p, cb) }
  return true
}

/** What a filter rewrite decides: the filter aedes is to see, or a protocol error that ends the connection. */
export type FilterRewrite = (filter: string, op: 'subscribe' | 'unsubscribe', noLocal: boolean) => string | { protocolError: string }

/**
 * Every topic filter of a SUBSCRIBE or UNSUBSCRIBE passes `rewrite` as parsed, before aedes' handler sees it (shared
 * subscriptions: a `$share/...` filter becomes the name aedes holds the member's subscription under). Wraps the
 * parser's first packet listener, like interceptPackets (either may be installed first). A protocol error: a v5
 * client gets DISCONNECT 0x82 with the reason, a 3.1.1 one is closed; aedes never sees that packet.
 */
export function rewriteFilters(client: object, rewrite: FilterRewrite): boolean {
  const c = internals(client)
  if (!c) return false
  const parser = c._parser
  const next = parser.listeners('packet')[0] as ((this: EventEmitter, p: unknown) => void) | undefined
  if (!next) return false
  parser.removeListener('packet', next)
  parser.on('packet', function (this: EventEmitter, packet: { cmd: string; subscriptions?: { topic: string; nl?: boolean }[]; unsubscriptions?: string[] }) {
    if (packet.cmd === 'subscribe' && packet.subscriptions) {
      for (const sub of packet.subscriptions) {
        const r = rewrite(sub.topic, 'subscribe', sub.nl === true)
        if (typeof r !== 'string') { disconnectWithReason(client, RC.PROTOCOL_ERROR, r.protocolError); return }
        sub.topic = r
      }
    } else if (packet.cmd === 'unsubscribe' && packet.unsubscriptions) {
      packet.unsubscriptions = packet.unsubscriptions.map((t) => { const r = rewrite(t, 'unsubscribe', false); return typeof r === 'string' ? r : t })
    }
    next.call(this, packet)
  })
  return true
}

/** Whether aedes may write a PUBLISH to this client now: its CONNACK is out and it is not closed. */
export function readyForDelivery(client: object): boolean {
  const c = client as Partial<ClientInternals>
  return c.connackSent === true && c.closed !== true
}

let sharedAdvertised = false

/**
 * aedes 2.0.0-beta.1 has no shared subscriptions: every v5 CONNACK carries Shared Subscription Available = 0
 * (connackProperties in its connect handler) and a v5 SUBSCRIBE to `$share/...` gets 0x9E. The gateway has them
 * (shared-subscriptions.ts renames every valid `$share/` filter before aedes sees it), so a `$share/` filter aedes
 * still refuses is a malformed one. From this call on, the write hook (hookWrites) makes v5 CONNACKs advertise them
 * and that refusal read 0x8F (Topic Filter invalid). Process-wide, idempotent.
 */
export function advertiseSharedSubscriptions(): void {
  sharedAdvertised = true
  hookWrites()
}

function advertiseShared(p: { cmd: string; properties?: { sharedSubscriptionAvailable?: boolean }; granted?: number[] }): void {
  if (p.cmd === 'connack' && p.properties?.sharedSubscriptionAvailable === false) p.properties.sharedSubscriptionAvailable = true
  if (p.cmd === 'suback' && p.granted) p.granted = p.granted.map((g) => (g === SHARED_NOT_SUPPORTED ? RC.TOPIC_FILTER_INVALID : g))
}

/** aedes' SUBACK code for a v5 `$share/` filter (MQTT 5.0 0x9E Shared Subscriptions not supported). */
const SHARED_NOT_SUPPORTED = 0x9e

/** What the gateway does with the packets aedes writes to one connection (see tapWrites). */
export interface WriteTap {
  /** A PUBLISH aedes writes: sent now, later or never by the tap; returns what aedes' write sees (false: wait for drain). */
  publish(packet: WirePublish): boolean
  /** aedes (or writeAck) answers an inbound PUBLISH: PUBACK, PUBREC or PUBCOMP with its reason code. */
  answered(cmd: 'puback' | 'pubrec' | 'pubcomp', messageId: number, reasonCode: number): void
}

/** A PUBLISH as aedes 2 passes it to mqtt-packet's writeToStream (an aedes Packet). */
export interface WirePublish {
  cmd: 'publish'; topic: string; payload: Buffer | string; qos: 0 | 1 | 2; retain?: boolean; dup?: boolean
  messageId?: number; properties?: Record<string, unknown>; messageExpiry?: number
}

const WRITE_TAP = Symbol('edgeway.writeTap')
interface TappedStream { [WRITE_TAP]?: WriteTap }
type WriteToStream = (packet: { cmd: string; messageId?: number; reasonCode?: number }, stream: object, opts?: object) => boolean
const V5_WRITE: Readonly<{ protocolVersion: 5 }> = Object.freeze({ protocolVersion: 5 })
let unhookedWrite: WriteToStream | null = null

/**
 * mqtt-packet writes each 2-byte number (packet ids, string lengths) from a table of all 65,536 of them as Buffers,
 * built at the first packet it writes in the process: 6 MiB of heap in the gateway's heap snapshot, for every
 * gateway that has a client. A board is short of memory, not of the allocation a number then costs: its documented
 * switch `writeToStream.cacheNumbers` turns the table off. Set before any packet is written (the table, once built,
 * stays), on mqtt-packet's own function (hookWrites replaces the export with a wrapper).
 */
export function writePacketNumbersUncached(): void {
  const fn = (unhookedWrite ?? (mqttPacket as unknown as { writeToStream: object }).writeToStream) as { cacheNumbers?: boolean }
  if (!('cacheNumbers' in fn)) throw new Error('mqtt-packet lacks writeToStream.cacheNumbers: mqtt-packet changed (see gateway/broker/aedes-adapter.ts)')
  fn.cacheNumbers = false
}

/**
 * aedes 2 serialises every packet it sends (lib/write.js) with `mqttPacket.writeToStream(packet, client.conn, opts)`,
 * looked up on mqtt-packet's exports at each call: that one function is wrapped (once per process, the gateway's only
 * wrapper of it), and a stream that carries a tap hands its PUBLISHes and acks to it; v5 CONNACK/SUBACK get the shared
 * subscriptions fix (advertiseSharedSubscriptions). Any other stream (3.1.1 clients, MQTT.js in this process) costs
 * one property read.
 */
function hookWrites(): WriteToStream {
  if (unhookedWrite) return unhookedWrite
  const exportsObj = mqttPacket as unknown as { writeToStream?: WriteToStream }
  const original = exportsObj.writeToStream
  if (typeof original !== 'function') throw new Error('mqtt-packet lacks writeToStream: aedes internals changed (see gateway/broker/aedes-adapter.ts)')
  exportsObj.writeToStream = function tappedWriteToStream(packet, stream, opts) {
    const cmd = packet.cmd
    if (sharedAdvertised && (cmd === 'connack' || cmd === 'suback') && (opts as { protocolVersion?: number } | undefined)?.protocolVersion === 5) advertiseShared(packet)
    const tap = (stream as TappedStream)[WRITE_TAP]
    if (tap === undefined) return original(packet, stream, opts)
    if (cmd === 'publish') return tap.publish(packet as unknown as WirePublish)
    if (cmd === 'puback' || cmd === 'pubrec' || cmd === 'pubcomp') {
      tap.answered(cmd, packet.messageId ?? 0, packet.reasonCode ?? 0)
      // aedes leaves a success's reason code unset, which mqtt-packet writes as a code and an empty property list (6
      // bytes); 0 gives the 4-byte form MQTT 5 allows for a success without properties (3.4.2.1), as the fast path's
      if (packet.reasonCode === undefined) packet.reasonCode = 0
    }
    return original(packet, stream, opts)
  }
  unhookedWrite = original
  return original
}

/**
 * Hands the PUBLISHes aedes writes to this (MQTT 5) client to `tap`, which sends them through the returned function
 * (false once the connection is gone, or when the socket's buffer is full: written anyway). Call before the CONNACK:
 * a persistent session's queue is written right after it.
 */
export function tapWrites(client: object, tap: WriteTap): (packet: WirePublish) => boolean {
  const c = internals(client)
  if (!c) throw new Error('aedes client lacks its internals: aedes internals changed (see gateway/broker/aedes-adapter.ts)')
  const write = hookWrites()
  const conn = c.conn as TappedStream & { destroyed?: boolean }
  conn[WRITE_TAP] = tap
  return (packet) => !c.closed && conn.destroyed !== true && write(packet, conn, V5_WRITE)
}

/**
 * Whether aedes is still in the connect of this client, i.e. writing the session's stored queue (it sets `connected`
 * only after the queue is out).
 */
export function replayingQueue(client: object): boolean {
  const c = internals(client)
  return c !== null && !c.connected && c.connackSent === true && !c.closed
}

/** Total wire size of a PUBLISH to a v5 client (what its Maximum Packet Size is compared with). */
export function outboundPublishSize(packet: WirePublish): number {
  return publishSize(packet)
}

/**
 * A v5 client broke a limit the gateway advertised (Receive Maximum: 0x93): aedes reads no more from the socket, the
 * client gets DISCONNECT with the code and reason. False (nothing done) if it is not a connected v5 client. Idempotent.
 */
export function refuseAndStopReading(client: object, reasonCode: number, reasonString: string): boolean {
  const c = internals(client)
  if (!c || c.version !== 5 || !(c.connected || c.connackSent) || c.closed) return false
  if (c._rejectingPacketTooLarge) return true
  // the latch aedes' read loop checks (named for its own use, the packet-too-large refusal)
  c._rejectingPacketTooLarge = true
  sendDisconnect(c, reasonCode, reasonString)
  return true
}

const RETAINED_DEADLINE = Symbol('edgeway.retainedDeadline')
interface DeadlineProperties { [RETAINED_DEADLINE]?: number }

/**
 * aedes 2 sends a retained message on subscribe as a new packet (lib/handlers/subscribe.js) that keeps no deadline,
 * only an interval rounded up to the second, and copies the stored packet's properties into it by spread. A deadline
 * kept under a symbol key in those properties rides along, unseen by mqtt-packet (for...in) and JSON: without it, a
 * retained message that waits for the client's Receive Maximum would count its wait from when it was queued and could
 * leave with a second more than it has. Returns the packet to store (a copy; the caller's is not touched).
 */
export function keepRetainedDeadline<P extends { messageExpiry?: number; properties?: object }>(packet: P): P {
  if (packet.messageExpiry === undefined) return packet
  return { ...packet, properties: { ...packet.properties, [RETAINED_DEADLINE]: packet.messageExpiry } }
}

/** The deadline (ms epoch) keepRetainedDeadline put on a retained message that aedes sends on subscribe. */
export function retainedDeadline(packet: WirePublish): number | undefined {
  return (packet.properties as DeadlineProperties | undefined)?.[RETAINED_DEADLINE]
}
