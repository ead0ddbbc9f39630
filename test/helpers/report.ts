// Delivery report: what devices were acked vs what a consumer received. Used by the tests and the amqp bench.
import type { Received } from './load.ts'

export interface SentSide { id: string; sent: number; acked: Set<number> }

export interface DeliveryReport {
  sent: number
  acked: number
  /** Distinct readings of these devices the consumer got. */
  delivered: number
  /** Extra copies of readings already received (same message id). */
  duplicated: number
  /** Acked by the gateway but never received: the number that must be 0. */
  lost: number
  /** Per device, a first copy arriving after a higher device sequence had arrived. */
  outOfOrder: number
  lostSample: string[]
}

export function deliveryReport(devices: SentSide[], got: Received[]): DeliveryReport {
  const mine = new Set(devices.map((d) => d.id))
  const ids = new Set<string>()
  const seen = new Map<string, Set<number>>()
  const last = new Map<string, number>()
  let duplicated = 0
  let outOfOrder = 0
  for (const r of got) {
    if (!mine.has(r.device)) continue
    if (ids.has(r.id)) { duplicated++; continue }
    ids.add(r.id)
    let s = seen.get(r.device)
    if (!s) { s = new Set(); seen.set(r.device, s) }
    s.add(r.deviceSeq)
    const prev = last.get(r.device)
    if (prev !== undefined && r.deviceSeq < prev) outOfOrder++
    else last.set(r.device, r.deviceSeq)
  }
  const lostSample: string[] = []
  let lost = 0
  for (const d of devices) {
    for (const n of d.acked) {
      if (seen.get(d.id)?.has(n)) continue
      lost++
      if (lostSample.length < 20) lostSample.push(`${d.id}#${n}`)
    }
  }
  return {
    sent: devices.reduce((n, d) => n + d.sent, 0),
    acked: devices.reduce((n, d) => n + d.acked.size, 0),
    delivered: ids.size,
    duplicated, lost, outOfOrder, lostSample,
  }
}

export function formatReport(r: DeliveryReport): string {
  return `sent ${r.sent} / acked ${r.acked} / delivered ${r.delivered} / duplicated ${r.duplicated} / lost ${r.lost} / out-of-order ${r.outOfOrder}`
    + (r.lostSample.length ? ` (lost e.g. ${r.lostSample.join(', ')})` : '')
}
