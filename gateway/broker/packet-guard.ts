// Enforces a maximum MQTT packet size as soon as a packet's length header is parsed, before its body is buffered.
// aedes 1.x exposes no option for this, so the check sits on its mqtt-packet parser instance; a test covers it.

interface ParserLike {
  packet: { length: number }
  _parseLength: () => boolean
  _emitError: (err: Error) => void
}

export class PacketTooLargeError extends Error {
  constructor(readonly size: number, readonly max: number) {
    super(`packet of ${size} bytes exceeds mqtt.maxPacketSize (${max} bytes)`)
    this.name = 'PacketTooLargeError'
  }
}

export function guardPacketSize(client: object, max: number): void {
  const parser = (client as { _parser?: ParserLike })._parser
  if (!parser || typeof parser._parseLength !== 'function') {
    throw new Error('aedes client has no mqtt-packet parser: cannot enforce mqtt.maxPacketSize (aedes internals changed?)')
  }
  const parseLength = parser._parseLength
  parser._parseLength = function guardedParseLength(this: ParserLike): boolean {
    const ok = parseLength.call(this)
    if (ok && this.packet.length > max) {
      this._emitError(new PacketTooLargeError(this.packet.length, max))
      return false
    }
    return ok
  }
}
