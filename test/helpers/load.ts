// Simulated devices publishing numbered readings at QoS 1, remembering exactly which ones the gateway acknowledged.
import mqtt, { type MqttClient } from 'mqtt'
import { endClient } from './mqtt.ts'

export interface DeviceSim {
  id: string
  acked: Set<number>
  sent: number
  /** The connection closed (by the gateway, or by stop()). */
  closed: boolean
  stop(): Promise<void>
}

/**
 * Publishes `{"v":n,"seq":n}` to devices/<id>/telemetry with up to `window` unacked messages, until stopped or the
 * connection drops (it does not reconnect: a new sim continues from `startSeq`).
 */
export function simulateDevice(url: string, id: string, opts: { window?: number; startSeq?: number; auth?: { username: string; password: string }; payloadPad?: number; max?: number; /** Pause after each ack (paces the device; with window 1 about 1000/intervalMs readings/s). */ intervalMs?: number } = {}): DeviceSim {
  const acked = new Set<number>()
  const window = opts.window ?? 8
  let seq = opts.startSeq ?? 0
  let inflight = 0
  let running = true
  const pad = opts.payloadPad ? 'x'.repeat(opts.payloadPad) : ''
  const c: MqttClient = mqtt.connect(url, { clientId: `${id}:sim-${seq}`, reconnectPeriod: 0, connectTimeout: 5000, ...(opts.auth ?? {}) })
  c.on('error', () => undefined)
  const sim: DeviceSim = {
    id, acked, sent: 0, closed: false,
    async stop() { running = false; await endClient(c) },
  }
  const pump = (): void => {
    while (running && c.connected && inflight < window && (opts.max === undefined || seq < (opts.startSeq ?? 0) + opts.max)) {
      const n = seq++
      inflight++
      sim.sent++
      c.publish(`devices/${id}/telemetry`, JSON.stringify({ v: n, seq: n, ...(pad ? { pad } : {}) }), { qos: 1 }, (err) => {
        inflight--
        if (!err) acked.add(n)
        if (!err) { if (opts.intervalMs) setTimeout(pump, opts.intervalMs); else setImmediate(pump) }
      })
    }
  }
  c.on('connect', pump)
  c.on('close', () => { running = false; sim.closed = true })
  return sim
}

export interface Received { id: string; device: string; seq: number; deviceSeq: number }

/** Subscribes to the upstream copy of the readings (mqtt upstream envelope). */
export async function upstreamCollector(url: string, clientId: string): Promise<{ got: Received[]; client: MqttClient }> {
  const client = mqtt.connect(url, { clientId, clean: false, reconnectPeriod: 100, connectTimeout: 5000 })
  client.on('error', () => undefined)
  const got: Received[] = []
  client.on('message', (_t, payload) => {
    const m = JSON.parse(payload.toString()) as Received
    got.push({ id: m.id, device: m.device, seq: m.seq, deviceSeq: m.deviceSeq })
  })
  await new Promise<void>((resolve) => client.once('connect', () => resolve()))
  await client.subscribeAsync('edgeway/#', { qos: 1 })
  return { got, client }
}

/** Every acked (device, seq) must be in `got`; returns the missing ones and the per-device order violations. */
export function audit(sims: DeviceSim[], got: Received[]): { missing: string[]; outOfOrder: string[]; duplicates: number } {
  const seen = new Map<string, Set<number>>()
  const firstSeen = new Map<string, number[]>()
  const ids = new Set<string>()
  let duplicates = 0
  for (const r of got) {
    if (ids.has(r.id)) { duplicates++; continue }
    ids.add(r.id)
    let s = seen.get(r.device)
    if (!s) { s = new Set(); seen.set(r.device, s); firstSeen.set(r.device, []) }
    s.add(r.deviceSeq)
    firstSeen.get(r.device)!.push(r.deviceSeq)
  }
  const missing: string[] = []
  for (const sim of sims) for (const n of sim.acked) if (!seen.get(sim.id)?.has(n)) missing.push(`${sim.id}#${n}`)
  const outOfOrder: string[] = []
  for (const [device, order] of firstSeen) {
    for (let i = 1; i < order.length; i++) if (order[i]! < order[i - 1]!) outOfOrder.push(`${device}: ${order[i - 1]} before ${order[i]}`)
  }
  return { missing, outOfOrder, duplicates }
}
