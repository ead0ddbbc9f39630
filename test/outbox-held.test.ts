// Appends held while the disk is full (gateway/outbox/held.ts): arrival order, expiry after the hold, the memory bound.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { HeldAppends } from '../gateway/outbox/held.ts'
import type { ReadingInput } from '../gateway/readings.ts'

const row = (device: string, n: number, pad = 0): ReadingInput => ({ device, ts: n, deviceSeq: n, kind: 'json', payload: JSON.stringify({ v: n, pad: 'x'.repeat(pad) }), link: 'mqtt' })

test('held batches merge in arrival order and expire oldest first after the hold', () => {
  const h = new HeldAppends(1000)
  assert.ok(h.add([1], [row('a', 1), row('a', 2)], [], 0))
  assert.ok(h.add([2], [row('b', 1)], [{ id: 2, index: 1, device: 'b', reason: 'bad' }], 400))
  assert.ok(h.add([3], [row('a', 3)], [], 900))
  const m = h.merged()
  assert.deepEqual(m.ids, [1, 2, 3])
  assert.deepEqual(m.rows.map((r) => `${r.device}${r.deviceSeq}`), ['a1', 'a2', 'b1', 'a3'])
  assert.equal(m.refused.length, 1)
  assert.deepEqual(h.expire(999).map((b) => b.ids), [])
  assert.deepEqual(h.expire(1400).map((b) => b.ids), [[1], [2]])
  assert.equal(h.size, 1)
  assert.deepEqual(h.takeAll().map((b) => b.ids), [[3]])
  assert.equal(h.size, 0)
  assert.equal(h.heldBytes, 0)
})

test('beyond the byte bound a new batch is refused, but the first one is always held', () => {
  const h = new HeldAppends(60_000, 1000)
  assert.ok(h.add([1], [row('a', 1, 5000)], [], 0), 'the first batch is held even when larger than the bound')
  assert.equal(h.add([2], [row('a', 2, 10)], [], 1), false)
  assert.equal(h.size, 1)
})
