// OTA pure code: wire format, job state machine, ACL for devices/<id>/ota/*, CLI duration parsing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  encodeAnnounce, decodeAnnounce, encodeChunk, decodeChunk, chunkHeader, parseRequest, chunkRange, parseStatus, parseFirmwareReport, CHUNK_HEADER_BYTES,
} from '../gateway/ota/protocol.ts'
import { step, afterRestart, type OtaJob } from '../gateway/ota/job.ts'
import { mayPublish, maySubscribe, topicKind } from '../gateway/broker/policy.ts'
import { parseDuration } from '../gateway/ota/cli.ts'

const sha = 'ab'.repeat(32)

test('announce: JSON with protocol version; decode checks every field; an empty payload means no job', () => {
  const s = encodeAnnounce({ job: 7, version: '1.2.0', size: 1000, sha256: sha, chunkSize: 4096, signature: null })
  assert.deepEqual(JSON.parse(s), { v: 1, job: 7, version: '1.2.0', size: 1000, sha256: sha, chunkSize: 4096, signature: null })
  assert.deepEqual(decodeAnnounce(s), { v: 1, job: 7, version: '1.2.0', size: 1000, sha256: sha, chunkSize: 4096, signature: null })
  assert.equal(decodeAnnounce(Buffer.alloc(0)), null)
  assert.throws(() => decodeAnnounce(JSON.stringify({ ...JSON.parse(s), v: 2 })), /unsupported OTA protocol version 2/)
  assert.throws(() => decodeAnnounce(JSON.stringify({ ...JSON.parse(s), sha256: 'xyz' })), /malformed/)
  assert.throws(() => decodeAnnounce('nope'), /not a JSON object/)
})

test('chunk: "EWO1", job and offset as big-endian u32, then the bytes', () => {
  const b = encodeChunk(0x01020304, 4096, Buffer.from([0xde, 0xad]))
  assert.equal(b.toString('hex'), '45574f31' + '01020304' + '00001000' + 'dead')
  assert.equal(CHUNK_HEADER_BYTES, 12)
  const d = decodeChunk(b)
  assert.deepEqual({ job: d.job, offset: d.offset, data: [...d.data] }, { job: 0x01020304, offset: 4096, data: [0xde, 0xad] })
  assert.equal(chunkHeader(1, 2).length, 12)
  assert.throws(() => decodeChunk(Buffer.from('XXXX00000000')), /bad magic/)
  assert.throws(() => decodeChunk(Buffer.from('EWO1')), /too short/)
})

test('request: parsed strictly; the range is clipped to the image and the chunk size', () => {
  assert.deepEqual(parseRequest('{"job":3,"offset":8192}'), { ok: true, value: { job: 3, offset: 8192, length: null } })
  assert.deepEqual(parseRequest('{"job":3,"offset":0,"length":100}'), { ok: true, value: { job: 3, offset: 0, length: 100 } })
  for (const [p, why] of [['x', /JSON object/], ['{"offset":0}', /job/], ['{"job":1,"offset":-1}', /offset/], ['{"job":1,"offset":1.5}', /offset/], ['{"job":1,"offset":0,"length":0}', /length/]] as const) {
    const r = parseRequest(p)
    assert.equal(r.ok, false, p)
    if (!r.ok) assert.match(r.error, why)
  }
  assert.deepEqual(chunkRange({ job: 1, offset: 0, length: null }, 10000, 4096), { ok: true, value: { offset: 0, length: 4096 } })
  assert.deepEqual(chunkRange({ job: 1, offset: 8192, length: null }, 10000, 4096), { ok: true, value: { offset: 8192, length: 1808 } })
  assert.deepEqual(chunkRange({ job: 1, offset: 0, length: 99999 }, 10000, 4096), { ok: true, value: { offset: 0, length: 4096 } })
  assert.deepEqual(chunkRange({ job: 1, offset: 0, length: 10 }, 10000, 4096), { ok: true, value: { offset: 0, length: 10 } })
  const past = chunkRange({ job: 1, offset: 10000, length: null }, 10000, 4096)
  assert.equal(past.ok, false)
})

test('status and firmware reports', () => {
  assert.deepEqual(parseStatus('{"job":1,"state":"downloading","offset":4096}'), { ok: true, value: { job: 1, state: 'downloading', offset: 4096 } })
  assert.deepEqual(parseStatus('{"job":1,"state":"applied"}'), { ok: true, value: { job: 1, state: 'applied' } })
  assert.deepEqual(parseStatus('{"job":1,"state":"failed","reason":"sha256 mismatch"}'), { ok: true, value: { job: 1, state: 'failed', reason: 'sha256 mismatch' } })
  assert.deepEqual(parseStatus('{"job":1,"state":"failed"}'), { ok: true, value: { job: 1, state: 'failed', reason: 'no reason given' } })
  assert.equal(parseStatus('{"job":1,"state":"downloading"}').ok, false)
  assert.equal(parseStatus('{"job":1,"state":"done"}').ok, false)
  assert.deepEqual(parseFirmwareReport('{"firmware":"1.2.0","healthy":true}'), { version: '1.2.0', healthy: true })
  assert.deepEqual(parseFirmwareReport('{"fw":"1.2.0"}'), { version: '1.2.0', healthy: null })
  assert.equal(parseFirmwareReport('{"temp":3}'), null)
  assert.equal(parseFirmwareReport('[1]'), null)
})

const base: OtaJob = {
  id: 1, device: 'n1', version: '2.0', previousVersion: '1.0', size: 10000, sha256: sha, chunkSize: 4096, signature: null, state: 'announced',
  reason: null, offset: 0, createdAt: 0, updatedAt: 0, appliedAt: null, deadlineMs: 60_000, deadlineAt: null, reconnected: false, lastHealth: null,
}

test('job: download, applied, reconnect and healthy new version -> succeeded', () => {
  let j = step(base, { type: 'served', end: 4096 }, 1).job
  assert.equal(j.state, 'downloading')
  assert.equal(j.offset, 4096)
  j = step(j, { type: 'downloading', offset: 2048 }, 2).job
  assert.equal(j.offset, 2048, "the device's verified offset wins")
  const applied = step(j, { type: 'applied' }, 1000)
  assert.equal(applied.transition, true)
  j = applied.job
  assert.equal(j.deadlineAt, 61_000)
  // Reporting the new version without a reconnect does not count: the device has not rebooted.
  assert.equal(step(j, { type: 'firmware', version: '2.0', healthy: true }, 1100).changed, false)
  j = step(j, { type: 'online' }, 2000).job
  j = step(j, { type: 'firmware', version: '2.0', healthy: false }, 2100).job
  assert.equal(j.state, 'applied')
  j = step(j, { type: 'firmware', version: '2.0', healthy: true }, 2200).job
  assert.equal(j.state, 'succeeded')
  assert.equal(step(j, { type: 'failed', reason: 'x' }, 3000).changed, false, 'final states stay final')
})

test('job: rollbacks (old version after applied, deadline) and failure', () => {
  let j = step(base, { type: 'applied' }, 0).job
  j = step(j, { type: 'online' }, 10).job
  const old = step(j, { type: 'firmware', version: '1.0', healthy: true }, 20).job
  assert.equal(old.state, 'rolled_back')
  assert.match(old.reason!, /came back running 1\.0 instead of 2\.0/)

  const a = step(base, { type: 'applied' }, 0).job
  assert.equal(step(a, { type: 'tick' }, 59_999).changed, false)
  const late = step(a, { type: 'tick' }, 60_000).job
  assert.equal(late.state, 'rolled_back')
  assert.match(late.reason!, /within 60 s after applied: the device did not reconnect/)
  let u = step(step(a, { type: 'online' }, 5).job, { type: 'firmware', version: '2.0', healthy: false }, 6).job
  u = step(u, { type: 'tick' }, 60_001).job
  assert.match(u.reason!, /reported 2\.0 but not healthy/)

  const f = step(step(base, { type: 'served', end: 4096 }, 1).job, { type: 'failed', reason: 'sha256 mismatch' }, 2).job
  assert.equal(f.state, 'failed')
  assert.equal(f.reason, 'device reported failure: sha256 mismatch')
  const c = step(step(base, { type: 'applied' }, 0).job, { type: 'cancel', reason: 'by hand' }, 5).job
  assert.deepEqual([c.state, c.reason], ['cancelled', 'by hand'])
  assert.equal(step(c, { type: 'tick' }, 1e9).changed, false)
  // Old version reported while still downloading (an unrelated reboot) is no rollback.
  assert.equal(step(step(base, { type: 'online' }, 1).job, { type: 'firmware', version: '1.0', healthy: true }, 2).changed, false)
})

test('job: after a gateway restart an applied job gets a grace period and any connection counts as the comeback', () => {
  const a = step(base, { type: 'applied' }, 0).job
  const r = afterRestart(a, 100_000, 30_000)
  assert.equal(r.reconnected, true)
  assert.equal(r.deadlineAt, 130_000)
  assert.equal(afterRestart(a, 1000, 30_000).deadlineAt, 60_000, 'an unexpired deadline stays')
})

test('ACL: a device subscribes to its own ota announce/chunk and publishes its own request/status; nothing else', () => {
  assert.equal(topicKind('ota/request'), 'ota_request')
  assert.equal(topicKind('ota/status'), 'ota_status')
  assert.equal(topicKind('ota/chunk'), 'ota_downlink')
  for (const t of ['devices/a/ota/announce', 'devices/a/ota/chunk']) assert.deepEqual(maySubscribe('a', t), { ok: true }, t)
  for (const t of ['devices/b/ota/announce', 'devices/b/ota/chunk', 'devices/a/ota/#', 'devices/a/ota/+', 'devices/+/ota/chunk', 'devices/a/ota/request', 'devices/a/ota/status']) {
    assert.equal(maySubscribe('a', t).ok, false, t)
  }
  for (const t of ['devices/a/ota/request', 'devices/a/ota/status']) assert.deepEqual(mayPublish('a', t), { ok: true }, t)
  for (const t of ['devices/a/ota/announce', 'devices/a/ota/chunk', 'devices/a/ota/other', 'devices/a/ota', 'devices/b/ota/request', 'devices/b/ota/status']) {
    assert.equal(mayPublish('a', t).ok, false, t)
  }
})

test('CLI durations', () => {
  assert.equal(parseDuration('120s'), 120_000)
  assert.equal(parseDuration('2m'), 120_000)
  assert.equal(parseDuration('1500ms'), 1500)
  assert.equal(parseDuration('30'), 30_000)
  assert.throws(() => parseDuration('soon'), /invalid duration "soon"/)
})
