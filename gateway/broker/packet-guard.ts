// Packet checks that aedes 2.0.0-beta.1 and mqtt-packet 9 do not make, installed on each client's mqtt-packet parser:
// a maximum packet size (checked on the length header, before the body is buffered) and the MQTT 3.1.1 rules whose
// breach the server MUST answer by closing the connection. They run inside the parser, before it emits 'packet', so
// they hold whoever listens to 'packet' (the broker's fast path replaces aedes' listener). These are parser
// internals: guardPackets throws at install if one is missing, and test/strict-packets.test.ts runs each check
// against a real mqtt-packet Parser.
import { isUtf8 } from 'node:buffer'

interface ParsingPacket {
  cmd: string | null
  length: number
  qos: number
  dup: boolean
  messageId?: number
  topic: string | null
  protocolId?: string
  protocolVersion?: number
  clientId?: string
  will?: { topic?: string }
  subscriptions?: { topic: string }[]
  unsubscriptions?: string[]
}

interface ParserLike {
  packet: ParsingPacket
  error: Error | null
  _pos: number
  _list: { slice(start: number, end: number): Buffer }
  _parseLength(): boolean
  _parsePayload(): boolean
  _parseString(...args: unknown[]): string | null
  _emitError(err: Error): void
}

export interface PacketGuardOptions {
  maxPacketSize: number
  /**
   * An oversized packet: true if the caller refused it itself (an MQTT 5 client gets DISCONNECT 0x95 and nothing
   * more is read); false, the parser emits the error and the connection closes.
   */
  onTooLarge?: (err: PacketTooLargeError) => boolean
}

export class PacketTooLargeError extends Error {
  constructor(readonly size: number, readonly max: number) {
    super(`packet of ${size} bytes exceeds mqtt.maxPacketSize (${max} bytes)`)
    this.name = 'PacketTooLargeError'
  }
}

/** A packet the spec says the server must close the connection on; `rule` is the MQTT 3.1.1 conformance id. */
export class MalformedPacketError extends Error {
  constructor(readonly rule: string, what: string) {
    super(`malformed packet: ${what} (${rule})`)
    this.name = 'MalformedPacketError'
  }
}

const METHODS = ['_parseLength', '_parsePayload', '_parseString', '_emitError'] as const
const GUARDED = Symbol('edgeway.packetGuard')

/** Installs every guard on an aedes client's parser. Throws if the parser internals it relies on are missing. */
export function guardPackets(client: object, opts: PacketGuardOptions): void {
  const parser = (client as { _parser?: unknown })._parser
  if (!parser || typeof parser !== 'object') {
    throw new Error('aedes client has no mqtt-packet parser: cannot enforce mqtt.maxPacketSize and MQTT packet rules (aedes internals changed?)')
  }
  guardParser(parser, opts)
}

/** The same guards on a bare mqtt-packet Parser (what guardPackets installs; exported for the tests). */
export function guardParser(parser: object, opts: PacketGuardOptions): void {
  const p = parser as Partial<ParserLike> & { [GUARDED]?: true }
  const missing: string[] = METHODS.filter((m) => typeof p[m] !== 'function')
  if (typeof p._list?.slice !== 'function') missing.push('_list')
  if (!p.packet || !('error' in p)) missing.push('packet', 'error')
  if (missing.length) {
    throw new Error(`mqtt-packet parser lacks ${missing.join(', ')}: cannot enforce mqtt.maxPacketSize and MQTT packet rules (mqtt-packet internals changed?)`)
  }
  if (p[GUARDED]) return
  p[GUARDED] = true
  const g = p as ParserLike
  const max = opts.maxPacketSize
  const parseLength = g._parseLength
  const parsePayload = g._parsePayload
  const parseString = g._parseString
  // A bad string is only noted while the payload is parsed, and reported once it is: reported at once, the rest
  // of mqtt-packet's parse could emit a second error for the same packet (and aedes would count it twice).
  let badString: MalformedPacketError | null = null

  g._parseLength = function guardedParseLength(this: ParserLike): boolean {
    const ok = parseLength.call(this)
    if (ok && this.packet.length > max) {
      const err = new PacketTooLargeError(this.packet.length, max)
      if (!opts.onTooLarge?.(err)) this._emitError(err)
      return false
    }
    return ok
  }

  g._parseString = function guardedParseString(this: ParserLike, ...args: unknown[]): string | null {
    const start = this._pos + 2 // after the 2-byte length prefix
    const s = parseString.apply(this, args)
    if (s !== null && badString === null) {
      const rule = stringRule(s, this._list, start, this._pos)
      if (rule) badString = new MalformedPacketError(rule, `${rule === NUL ? 'U+0000' : 'invalid UTF-8'} in ${stringField(this)}`)
    }
    return s
  }

  g._parsePayload = function guardedParsePayload(this: ParserLike): boolean {
    badString = null
    const done = parsePayload.call(this)
    // mqtt-packet's own error is already out (and the connection closes): one error per packet.
    if (!done || this.error) return done
    const err = badString ?? packetRule(this.packet)
    badString = null
    if (err) this._emitError(err)
    return done
  }
}

/** The old name, kept so that broker.ts needs no change: installs every guard, not only the size limit. */
export function guardPacketSize(client: object, max: number): void {
  guardPackets(client, { maxPacketSize: max })
}

const BAD_UTF8 = 'MQTT-1.5.3-1'
const NUL = 'MQTT-1.5.3-2'

/**
 * mqtt-packet decodes with toString('utf8'), which turns every ill-formed sequence (overlong, surrogate, truncated,
 * > U+10FFFF) into U+FFFD and 0x00 only into U+0000. So the raw bytes need a look only when the decoded string holds
 * a U+FFFD, which may also have been sent as such (valid, and allowed).
 */
function stringRule(s: string, list: ParserLike['_list'], start: number, end: number): string | null {
  if (s.includes('\u0000')) return NUL
  if (s.includes('\uFFFD') && !isUtf8(list.slice(start, end))) return BAD_UTF8
  return null
}

/** Which string of the packet is being parsed, for the log line (MQTT 5 property strings are not told apart). */
function stringField(parser: ParserLike): string {
  const p = parser.packet
  switch (p.cmd) {
    case 'publish': return p.topic === null ? 'PUBLISH topic' : 'PUBLISH property'
    case 'subscribe': return 'SUBSCRIBE topic filter'
    case 'unsubscribe': return 'UNSUBSCRIBE topic filter'
    case 'connect':
      if (p.protocolId === undefined) return 'CONNECT protocol name'
      if (p.protocolVersion === 5) return 'CONNECT string'
      if (p.clientId === undefined) return 'CONNECT client id'
      if (p.will && p.will.topic === undefined) return 'CONNECT will topic'
      return 'CONNECT user name'
    default: return `${String(p.cmd).toUpperCase()} string`
  }
}

function packetRule(p: ParsingPacket): MalformedPacketError | null {
  switch (p.cmd) {
    case 'publish':
      if (p.qos === 0 && p.dup) return new MalformedPacketError('MQTT-3.3.1-2', 'DUP flag set on a QoS 0 PUBLISH')
      if (p.qos > 0 && p.messageId === 0) return new MalformedPacketError('MQTT-2.3.1-1', `QoS ${p.qos} PUBLISH with packet identifier 0`)
      return null
    case 'subscribe':
    case 'unsubscribe': {
      if (p.messageId === 0) return new MalformedPacketError('MQTT-2.3.1-1', `${p.cmd.toUpperCase()} with packet identifier 0`)
      // aedes 2.0.0-beta.1 keys a client's subscriptions by filter in a plain object: a filter naming an
      // Object.prototype member ("constructor", "__proto__" ...) crashes it (see aedes-adapter.ts, unsafeKey).
      const filters = p.cmd === 'subscribe' ? (p.subscriptions ?? []).map((s) => s.topic) : p.unsubscriptions ?? []
      const bad = filters.find((f) => typeof f === 'string' && f in Object.prototype)
      if (bad !== undefined) return new MalformedPacketError('edgeway-unsafe-filter', `topic filter "${bad.slice(0, 40)}" is not accepted by this broker`)
      return null
    }
    default: return null
  }
}
