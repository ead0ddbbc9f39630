// The history tap's sampling (gateway/history/tap.ts): a device reporting faster than minIntervalMs gets at most
// one reading per interval into history; slower devices, backfilled times and other devices are untouched.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads'
import { HistoryTap } from '../gateway/history/tap.ts'
import type { TapBatch } from '../gateway/history/protocol.ts'
import type { ReadingInput } from '../gateway/readings.ts'

const r = (device: string, ts: number): ReadingInput => ({ device, ts, deviceSeq: null, kind: 'json', payload: `{"v":${ts}}`, link: 'mqtt' })

function forwarded(minIntervalMs: number, rows: ReadingInput[]): { device: string; ts: number }[] {
  const { port1, port2 } = new MessageChannel()
  const tap = new HistoryTap(port1, minIntervalMs)
  tap.add(rows, rows.length)
  tap.flush()
  const got: { device: string; ts: number }[] = []
  for (let m = receiveMessageOnPort(port2); m; m = receiveMessageOnPort(port2)) {
    const b = m.message as TapBatch
    for (let i = 0; i < b.ts.length; i++) got.push({ device: b.names[b.dev[i]!]!, ts: b.ts[i]! })
  }
  port1.close(); port2.close()
  return got
}

test('a fast device is sampled to one reading per interval, a slow one and backfill are kept whole', () => {
  const fast = Array.from({ length: 50 }, (_, i) => r('fast', 10_000 + i * 100)) // 10 readings/s for 5 s
  const slow = Array.from({ length: 5 }, (_, i) => r('slow', 10_000 + i * 2000))
  const backfill = [r('fast', 1_000), r('fast', 2_000)]
  const got = forwarded(1000, [...fast, ...slow, ...backfill])
  assert.deepEqual(got.filter((g) => g.device === 'fast' && g.ts >= 10_000).map((g) => g.ts), [10_000, 11_000, 12_000, 13_000, 14_000])
  assert.equal(got.filter((g) => g.device === 'slow').length, 5)
  assert.deepEqual(got.filter((g) => g.ts < 10_000).map((g) => g.ts), [1_000, 2_000], 'older times (a device catching up) are history filled in')
  assert.equal(forwarded(0, fast).length, 50, 'minIntervalMs 0 keeps every reading')
})
