// Server-side topic aliases (gateway/broker/topic-alias-out.ts), as pure logic: what use() tells the writer to put on
// the wire for each send (0: topic as it is; -n: topic + alias n, the client learns it; n: "" + alias n).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { TopicAliasesOut } from '../gateway/broker/topic-alias-out.ts'

const sends = (a: TopicAliasesOut, topics: string[]): number[] => topics.map((t) => a.use(t))

test('a topic gets its alias on its second send: plain, then topic + alias (negative), then the alias alone', () => {
  const a = new TopicAliasesOut(10)
  assert.deepEqual(sends(a, ['lab/alpha/telemetry', 'lab/alpha/telemetry', 'lab/alpha/telemetry', 'lab/alpha/telemetry']), [0, -1, 1, 1])
  assert.equal(a.size, 1)
})

test('aliases are numbered 1, 2, ... in the order topics are sent a second time, not first', () => {
  const a = new TopicAliasesOut(10)
  const [x, y, z] = ['sensors/x/temp', 'sensors/y/temp', 'sensors/z/temp']
  // first sends x, y, z; second sends z, x, y: z gets 1, x 2, y 3
  assert.deepEqual(sends(a, [x, y, z, z, x, y, x, y, z]), [0, 0, 0, -1, -2, -3, 2, 3, 1])
})

test('never more aliases than the client\'s Topic Alias Maximum; an alias is never moved to another topic', () => {
  const a = new TopicAliasesOut(2)
  const topics = ['lab/one/telemetry', 'lab/two/telemetry', 'lab/three/telemetry']
  const wire = [0, 1, 2, 3].map(() => sends(a, topics))
  assert.deepEqual(wire, [[0, 0, 0], [-1, -2, 0], [1, 2, 0], [1, 2, 0]])
  assert.equal(a.size, 2)
  // a topic first seen once the aliases are all given out never gets one either
  assert.deepEqual(sends(a, ['lab/four/telemetry', 'lab/four/telemetry', 'lab/four/telemetry']), [0, 0, 0])
  // a maximum of 1: exactly one topic
  const one = new TopicAliasesOut(1)
  assert.deepEqual([0, 1, 2].map(() => sends(one, topics)), [[0, 0, 0], [-1, 0, 0], [1, 0, 0]])
})

test('a client that allows no aliases (maximum 0) never gets one', () => {
  const a = new TopicAliasesOut(0)
  assert.deepEqual(sends(a, Array.from({ length: 5 }, () => 'lab/alpha/telemetry')), [0, 0, 0, 0, 0])
  assert.equal(a.size, 0)
})

test('short topics never get an alias (an alias costs 3 bytes): 6 characters never, 7 from their second send', () => {
  const a = new TopicAliasesOut(10)
  assert.deepEqual(sends(a, ['lab/ab', 'lab/ab', 'lab/ab', 'x', 'x', 'x']), [0, 0, 0, 0, 0, 0])
  assert.equal(a.size, 0, 'short topics take no alias from the longer ones')
  assert.deepEqual(sends(a, ['lab/abc', 'lab/abc', 'lab/abc']), [0, -1, 1])
})

test('a new instance (a new connection) starts without aliases; each instance numbers its own', () => {
  const t = 'lab/alpha/telemetry'
  const first = new TopicAliasesOut(5)
  assert.deepEqual(sends(first, ['lab/other/telemetry', 'lab/other/telemetry', t, t, t]), [0, -1, 0, -2, 2])
  const again = new TopicAliasesOut(5)
  assert.equal(again.size, 0)
  assert.deepEqual(sends(again, [t, t, t]), [0, -1, 1], 'learnt again from the start, numbered from 1')
})

test('the memory of topics sent once is bounded: after many other topics, one sent once is forgotten (and its next send counts as the first)', () => {
  const t = 'lab/alpha/telemetry'
  const few = new TopicAliasesOut(5)
  few.use(t)
  for (let i = 0; i < 100; i++) assert.equal(few.use(`lab/once/${i}`), 0)
  assert.equal(few.use(t), -1, 'still remembered after 100 others')
  const many = new TopicAliasesOut(5)
  many.use(t)
  for (let i = 0; i < 10000; i++) assert.equal(many.use(`lab/once/${i}`), 0)
  assert.deepEqual(sends(many, [t, t, t]), [0, -1, 1], 'forgotten: sent plain again, alias from the send after')
})
