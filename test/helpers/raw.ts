// Raw MQTT over a TCP socket with mqtt-packet, for what MQTT.js will not send (bad packets, odd CONNECTs).
import { connect as netConnect, type Socket } from 'node:net'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { pause } from './net.ts'

export interface RawClient {
  socket: Socket
  packets: Packet[]
  closed: Promise<void>
  isClosed(): boolean
  send(p: Record<string, unknown>): void
  write(b: Buffer): void
  next(cmd: string, timeoutMs?: number): Promise<Packet>
}

export async function rawConnect(port: number): Promise<RawClient> {
  const socket = netConnect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const packets: Packet[] = []
  let isClosed = false
  parser.on('packet', (p: Packet) => packets.push(p))
  socket.on('data', (d) => parser.parse(d))
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) => socket.once('close', () => { isClosed = true; resolve() }))
  return {
    socket, packets, closed,
    isClosed: () => isClosed,
    send: (p) => { socket.write(mqttPacket.generate(p as unknown as Packet)) },
    write: (b) => { socket.write(b) },
    async next(cmd, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const i = packets.findIndex((p) => p.cmd === cmd)
        if (i >= 0) return packets.splice(i, 1)[0]!
        if (isClosed) throw new Error(`connection closed before ${cmd}`)
        if (Date.now() > deadline) throw new Error(`no ${cmd} within ${timeoutMs} ms`)
        await pause(10)
      }
    },
  }
}

export function connectPacket(clientId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 30, ...extra }
}
