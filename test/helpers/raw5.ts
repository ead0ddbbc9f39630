// A raw MQTT 5 client over TCP with mqtt-packet: it acknowledges nothing unless told to, so a test sees exactly what
// the broker puts on the wire (packet ids, topic aliases, how many PUBLISHes are in flight).
import { connect as netConnect, type Socket } from 'node:net'
import mqttPacket, { type Packet, type IPublishPacket } from 'mqtt-packet'
import { scaled } from './net.ts'

export interface Raw5 {
  socket: Socket
  /** Every packet received, in order (next() takes from it). */
  packets: Packet[]
  /** Every PUBLISH received, in order (never taken from). */
  publishes: IPublishPacket[]
  closed: Promise<void>
  send(p: Record<string, unknown>): void
  next(cmd: string, timeoutMs?: number): Promise<Packet>
  /** Resolves once `n` PUBLISHes have arrived in all. */
  publishCount(n: number, timeoutMs?: number): Promise<void>
  end(): Promise<void>
}

export async function raw5(port: number, connect: Record<string, unknown>): Promise<{ c: Raw5; connack: Packet }> {
  const socket = netConnect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  const parser = mqttPacket.parser({ protocolVersion: 5 })
  const packets: Packet[] = []
  const publishes: IPublishPacket[] = []
  let isClosed = false
  parser.on('packet', (p: Packet) => { packets.push(p); if (p.cmd === 'publish') publishes.push(p) })
  socket.on('data', (d) => parser.parse(d))
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) => socket.once('close', () => { isClosed = true; resolve() }))
  const waitUntil = async (what: string, ok: () => boolean, timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + scaled(timeoutMs)
    for (;;) {
      if (ok()) return
      if (isClosed) throw new Error(`connection closed before ${what}`)
      if (Date.now() > deadline) throw new Error(`no ${what} within ${scaled(timeoutMs)} ms`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }
  const c: Raw5 = {
    socket, packets, publishes, closed,
    send: (p) => { socket.write(mqttPacket.generate(p as unknown as Packet, { protocolVersion: 5 })) },
    async next(cmd, timeoutMs = 5000) {
      let found: Packet | undefined
      await waitUntil(cmd, () => {
        const i = packets.findIndex((p) => p.cmd === cmd)
        if (i >= 0) found = packets.splice(i, 1)[0]
        return found !== undefined
      }, timeoutMs)
      return found!
    },
    publishCount: (n, timeoutMs = 5000) => waitUntil(`${n} PUBLISHes (have ${publishes.length})`, () => publishes.length >= n, timeoutMs),
    async end() { if (!isClosed) { socket.end(mqttPacket.generate({ cmd: 'disconnect', reasonCode: 0 } as Packet, { protocolVersion: 5 })); socket.destroy() } await closed },
  }
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 30, ...connect })
  const connack = await c.next('connack')
  return { c, connack }
}
