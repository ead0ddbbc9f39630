// The gateway's own Receive Maximum (gateway/broker/inbound-quota.ts), as pure logic: which QoS 1/2 PUBLISHes of a
// client count as unanswered, and when one more is beyond the limit.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { InboundQuota, RECEIVE_MAXIMUM } from '../gateway/broker/inbound-quota.ts'

test('the advertised Receive Maximum is 1000, and the default quota enforces exactly it: the 1001st unanswered is refused', () => {
  assert.equal(RECEIVE_MAXIMUM, 1000)
  const q = new InboundQuota()
  for (let id = 1; id <= 1000; id++) assert.equal(q.take(id), true, `publish ${id}`)
  assert.equal(q.inFlight, 1000)
  assert.equal(q.take(1001), false)
  assert.equal(q.inFlight, 1000, 'a refused one takes no slot')
})

test('a refused publish fits again once an answer frees a slot; each answer frees exactly one', () => {
  const q = new InboundQuota(3)
  assert.deepEqual([1, 2, 3, 4].map((id) => q.take(id)), [true, true, true, false])
  q.answered('puback', 2, 0)
  assert.equal(q.inFlight, 2)
  assert.deepEqual([4, 5].map((id) => q.take(id)), [true, false])
})

test('answers: PUBACK with any code and PUBCOMP free the slot; a PUBREC frees it only with a code of 0x80 or more', () => {
  const q = new InboundQuota(10)
  for (let id = 1; id <= 6; id++) q.take(id)
  q.answered('pubrec', 1, 0)
  q.answered('pubrec', 2, 0x10) // No matching subscribers: a success, PUBREL/PUBCOMP still to come
  assert.equal(q.inFlight, 6, 'a successful PUBREC is not an answer')
  q.answered('pubcomp', 1, 0)
  assert.equal(q.inFlight, 5)
  q.answered('pubrec', 3, 0x80)
  q.answered('pubrec', 4, 0x87)
  assert.equal(q.inFlight, 3)
  q.answered('puback', 5, 0)
  q.answered('puback', 6, 0x87) // refused by the ACL: answered all the same
  assert.equal(q.inFlight, 1)
  assert.equal(q.take(4), true)
  assert.equal(q.inFlight, 2, 'a freed packet id can be used again')
})

test('a retransmission of a packet id still in flight takes no second slot, even with the quota full', () => {
  const q = new InboundQuota(2)
  assert.equal(q.take(7), true)
  assert.equal(q.take(7), true)
  assert.equal(q.inFlight, 1)
  assert.equal(q.take(8), true)
  assert.equal(q.take(7), true, 'the QoS 2 duplicate of 7 is no new publish')
  assert.equal(q.take(9), false)
  assert.equal(q.inFlight, 2)
})

test('an answer for a packet id not in flight changes nothing (frees no other slot)', () => {
  const q = new InboundQuota(2)
  q.take(1)
  q.take(2)
  q.answered('puback', 99, 0)
  q.answered('pubcomp', 3, 0)
  assert.equal(q.inFlight, 2)
  assert.equal(q.take(3), false)
  // answering the same one twice frees it once
  q.answered('puback', 1, 0)
  q.answered('puback', 1, 0)
  assert.equal(q.inFlight, 1)
  assert.deepEqual([3, 4].map((id) => q.take(id)), [true, false])
})
