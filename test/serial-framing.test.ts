// Binary and JSON-line framings, tested with bytes: round trips, known CRC, and garbage between frames.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import {
  CobsDecoder, JsonLineDecoder, cobsDecode, cobsEncode, crc16, decodeReadingPayload, encodeCommand, encodeFrame,
  encodeReadingPayload, FrameType, parseChunk, type Frame,
} from '../devices/serial/framing.ts'

function decodeAll(dec: CobsDecoder | JsonLineDecoder, chunks: Buffer[]): unknown[] {
  const out: unknown[] = []
  dec.on('data', (f: unknown) => out.push(f))
  for (const c of chunks) dec.write(c)
  return out
}

function splitRandomly(b: Buffer, rnd: () => number): Buffer[] {
  const parts: Buffer[] = []
  let i = 0
  while (i < b.length) { const n = 1 + Math.floor(rnd() * 40); parts.push(b.subarray(i, i + n)); i += n }
  return parts
}

function lcg(seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32 }
}

test('CRC-16/CCITT-FALSE check value', () => {
  assert.equal(crc16(Buffer.from('123456789')), 0x29b1)
})

test('COBS round trip, including zeros and 254+ byte runs', () => {
  for (const data of [Buffer.alloc(0), Buffer.of(0), Buffer.of(0, 0), Buffer.of(1, 0, 2), Buffer.alloc(300, 7), randomBytes(253), Buffer.concat([Buffer.alloc(254, 1), Buffer.of(0)])]) {
    const enc = cobsEncode(data)
    assert.equal(enc.includes(0), false)
    assert.deepEqual(cobsDecode(enc), data)
  }
  assert.equal(cobsDecode(Buffer.of(5, 1, 2)), null, 'a code running past the end is invalid')
})

test('frame round trip: type, seq, payload', () => {
  const f: Frame = { type: FrameType.READING, seq: 200, payload: encodeReadingPayload({ adc0: 512, count: -3 }) }
  const wire = encodeFrame(f)
  assert.equal(wire[0], 0)
  assert.equal(wire[wire.length - 1], 0)
  const back = parseChunk(wire.subarray(1, wire.length - 1))!
  assert.equal(back.type, FrameType.READING)
  assert.equal(back.seq, 200)
  assert.deepEqual(decodeReadingPayload(back.payload), { adc0: 512, count: -3 })
})

test('a flipped bit is a bad frame, counted, and the next frame still decodes', () => {
  const a = encodeFrame({ type: FrameType.HELLO, seq: 0, payload: Buffer.from('sensor-node 1.0.0') })
  a[5] = a[5]! ^ 0x10
  const b = encodeFrame({ type: FrameType.ACK, seq: 9, payload: Buffer.alloc(0) })
  const dec = new CobsDecoder()
  const out = decodeAll(dec, [a, b]) as Frame[]
  assert.equal(out.length, 1)
  assert.equal(out[0]!.type, FrameType.ACK)
  assert.equal(dec.stats.badFrames, 1)
})

test('random garbage between valid frames: every valid frame is decoded, garbage counted', () => {
  const rnd = lcg(42)
  const frames: Frame[] = []
  const parts: Buffer[] = []
  for (let i = 0; i < 500; i++) {
    const f: Frame = { type: FrameType.READING, seq: i & 0xff, payload: encodeReadingPayload({ adc0: i, count: i * 7 }) }
    frames.push(f)
    parts.push(encodeFrame(f))
    if (i % 3 === 0) parts.push(randomBytes(1 + Math.floor(rnd() * 80)))
  }
  const dec = new CobsDecoder()
  const out = decodeAll(dec, splitRandomly(Buffer.concat(parts), rnd)) as Frame[]
  const got = out.filter((f) => f.type === FrameType.READING).map((f) => decodeReadingPayload(f.payload))
  const want = frames.map((f) => decodeReadingPayload(f.payload))
  // Garbage may, with probability ~2^-16 per attempt, look like a frame: none of ours may be missing or altered.
  let j = 0
  for (const w of want) {
    while (j < got.length && JSON.stringify(got[j]) !== JSON.stringify(w)) j++
    assert.ok(j < got.length, `frame ${JSON.stringify(w)} lost`)
    j++
  }
  assert.ok(dec.stats.badFrames > 0, 'garbage counted')
  assert.ok(out.length - frames.length <= 1, `at most a rare false frame from garbage, got ${out.length - frames.length}`)
})

test('garbage glued to the front of a frame without a leading delimiter is skipped (resync)', () => {
  const f = encodeFrame({ type: FrameType.READING, seq: 3, payload: encodeReadingPayload({ x: 1 }) })
  const noLead = f.subarray(1)
  const dec = new CobsDecoder()
  const out = decodeAll(dec, [Buffer.from([0x11, 0x22, 0x33, 0x44, 0x55]), noLead]) as Frame[]
  assert.equal(out.length, 1)
  assert.equal(out[0]!.seq, 3)
  assert.equal(dec.stats.resyncs, 1)
})

test('the tail of a frame before the first delimiter (port opened mid-frame) is a resync, not a bad frame', () => {
  const f = encodeFrame({ type: FrameType.READING, seq: 1, payload: encodeReadingPayload({ x: 1 }) })
  const dec = new CobsDecoder()
  const out = decodeAll(dec, [f.subarray(6), f]) as Frame[]
  assert.equal(out.length, 1)
  assert.deepEqual([dec.stats.badFrames, dec.stats.resyncs], [0, 1])
})

test('an endless run without delimiters is bounded and counted', () => {
  const dec = new CobsDecoder()
  decodeAll(dec, [Buffer.alloc(5000, 0x41)])
  assert.ok(dec.stats.badFrames >= 1)
  const out = decodeAll(dec, [encodeFrame({ type: FrameType.ACK, seq: 1, payload: Buffer.alloc(0) })]) as Frame[]
  assert.equal(out.length, 1)
})

test('JSON lines: objects out, banners and garbage counted', () => {
  const dec = new JsonLineDecoder()
  const out = decodeAll(dec, [Buffer.from('booting...\r\n{"t":2'), Buffer.from('1.5}\n\x01\x02garbage\n{"hum":40}\r\n')]) as Buffer[]
  assert.deepEqual(out.map((b) => b.toString()), ['{"t":21.5}', '{"hum":40}'])
  assert.equal(dec.stats.badFrames, 2)
})

test('reading payload rejects malformed and reserved names; commands encode', () => {
  assert.equal(decodeReadingPayload(Buffer.of(3, 0x61)), null)
  assert.equal(decodeReadingPayload(encodeReadingPayload({ seq: 1 })), null)
  assert.deepEqual(encodeCommand({ op: 'setInterval', ms: 250 }), Buffer.of(1, 0, 250))
  assert.deepEqual(encodeCommand({ op: 'setOutput', pin: 13, value: true }), Buffer.of(3, 13, 1))
  assert.throws(() => encodeCommand({ op: 'setInterval', ms: 5 }))
})
