// aedes' per-client dedupe (lib/client.js) forwards a packet only if its brokerCounter is above the last one the
// client got. It is there for overlapping subscriptions (`a/#` and `a/b` deliver one packet twice), but counters are
// assigned when a publish starts and packets reach subscribers when their asynchronous steps finish (the retained
// store, the offline queue for QoS > 0): a retained or QoS 1 publish overtaken by a later one is silently lost for
// every live subscriber of both (moscajs/aedes#994, #955; measured here: 50 retained server publishes, each followed
// by a QoS 0 one, and none of the 50 arrived). This replaces the order check by "not among this client's last
// RECENT deliveries", which keeps one copy per packet and loses none. The one place that touches those internals;
// test/broker-dedupe.test.ts fails if aedes changes them.

interface DedupedPacket { brokerId?: string; brokerCounter?: number; qos?: number }
type Deliver = (packet: DedupedPacket, cb: () => void) => void
interface DedupeInternals { duplicates: Record<string, number>; deliver0: Deliver; deliverQoS: Deliver }

/** The copies of one packet for overlapping subscriptions arrive within one emit: a short memory is enough. */
const RECENT = 32

/** Installs the order-independent dedupe on a client aedes just created (before it subscribes to anything). */
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
    const key = `${id}:${n}`
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
