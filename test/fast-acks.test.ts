import { test } from 'node:test'
import assert from 'node:assert/strict'
import { FastAcks, ackTag } from '../gateway/broker/fast-acks.ts'

function target(connected = true): { connected: boolean; writes: Buffer[]; failures: Error[]; write(b: Buffer): void; fail(e: Error): void } {
  return { connected, writes: [], failures: [], write(b) { this.writes.push(b) }, fail(e) { this.failures.push(e) } }
}
const tick = (): Promise<void> => new Promise((r) => process.nextTick(r))

test('fast acks: the PUBACKs settled in one turn go out as one write, in order; QoS 0 sends none', async () => {
  const t = target()
  const acks = new FastAcks(t)
  const tags = [ackTag(1, true, 100), ackTag(0, false, 50), ackTag(0xbeef, true, 70_000_000), ackTag(2, true, 0)]
  for (const tag of tags) acks.take(tag)
  assert.equal(acks.pending, 4)
  assert.equal(acks.pendingBytes, 100 + 50 + 70_000_000)
  for (const tag of tags) acks.settled(tag, null)
  assert.equal(t.writes.length, 0, 'written after the turn, not per publish')
  await tick()
  assert.deepEqual(t.writes.map((b) => [...b]), [[0x40, 2, 0, 1, 0x40, 2, 0xbe, 0xef, 0x40, 2, 0, 2]])
  assert.equal(acks.pending, 0)
  assert.equal(acks.pendingBytes, 0)
  acks.take(ackTag(3, true, 10))
  acks.settled(ackTag(3, true, 10), null)
  await tick()
  assert.deepEqual(t.writes.map((b) => [...b]).slice(1), [[0x40, 2, 0, 3]], 'a later commit gets its own write')
})

test('fast acks: a failed commit fails the connection without an ack; a closed connection gets no write', async () => {
  const t = target()
  const acks = new FastAcks(t)
  const tag = ackTag(9, true, 10)
  acks.take(tag)
  acks.settled(tag, new Error('disk full'))
  await tick()
  assert.deepEqual(t.writes, [])
  assert.deepEqual(t.failures.map((e) => e.message), ['disk full'])
  assert.equal(acks.pending, 0)
  const gone = target(false)
  const acks2 = new FastAcks(gone)
  acks2.take(tag)
  acks2.settled(tag, null)
  await tick()
  assert.deepEqual(gone.writes, [])
})

test('fast acks: a refused reading gets the target\'s refusal ack in its place (MQTT 5 PUBACK 0x99); without one, a plain PUBACK', async () => {
  const t = { ...target(), refusedAck: (id: number, reason: string) => Buffer.from([0x40, 3, id >> 8, id & 0xff, 0x99, reason.length]) }
  const acks = new FastAcks(t)
  const tags = [ackTag(1, true, 10), ackTag(2, true, 10), ackTag(3, true, 10)]
  for (const tag of tags) acks.take(tag)
  acks.settled(tags[0]!, null)
  acks.settled(tags[1]!, null, 'bad')
  acks.settled(tags[2]!, null)
  await tick()
  assert.deepEqual(t.writes.map((b) => [...b]), [[0x40, 2, 0, 1, 0x40, 3, 0, 2, 0x99, 3, 0x40, 2, 0, 3]])
  const plain = target()
  const acks3 = new FastAcks(plain)
  acks3.take(tags[1]!)
  acks3.settled(tags[1]!, null, 'bad')
  await tick()
  assert.deepEqual(plain.writes.map((b) => [...b]), [[0x40, 2, 0, 2]])
})
