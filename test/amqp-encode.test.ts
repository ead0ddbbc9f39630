// The amqp upstream's own encoder for reading messages must produce exactly rhea's bytes for the same message.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import rhea from 'rhea'
import { encodeReadingMessage } from '../bridges/amqp/encode.ts'
import { readingToAmqp, type AmqpOut } from '../bridges/amqp/map.ts'
import { messageId } from '../gateway/readings.ts'

function viaRhea(o: AmqpOut): Buffer {
  const { address: _a, body, ...rest } = o
  return rhea.message.encode({ ...rest, body: rhea.message.data_section(body) })
}

function reading(over: { device?: string; seq?: number; deviceSeq?: number | null; payload?: string; priority?: boolean; receivedAt?: number } = {}): Parameters<typeof readingToAmqp>[0] {
  const device = over.device ?? 'dev-1'
  const seq = over.seq ?? 42
  const receivedAt = over.receivedAt ?? 1_700_000_000_123
  return {
    device, ts: receivedAt - 5, deviceSeq: over.deviceSeq === undefined ? 7 : over.deviceSeq, kind: 'json', payload: over.payload ?? '{"t":21.5}',
    link: 'mqtt', rowId: seq, seq, msgId: messageId('gw', device, seq), receivedAt, ...(over.priority ? { priority: true } : {}),
  }
}

test('reading messages: the same bytes as rhea.message.encode, across every size class of every field', () => {
  const long = 'x'.repeat(300)
  const cases: [string, AmqpOut][] = [
    ['typical', readingToAmqp(reading(), 'gw', '/queue/readings')],
    ['no device sequence', readingToAmqp(reading({ deviceSeq: null }), 'gw', '/queue/readings')],
    ['priority lane', readingToAmqp(reading({ priority: true }), 'gw', '/queue/readings')],
    ['per-device address', readingToAmqp(reading(), 'gw', 'telemetry/{gateway}/{device}')],
    ['body over 255 bytes', readingToAmqp(reading({ payload: `{"note":"${long}"}` }), 'gw', '/queue/readings')],
    ['address over 255 bytes', readingToAmqp(reading(), 'gw', `/queue/${long}`)],
    ['long gateway id (message id and property over 255 bytes)', readingToAmqp(reading(), `gw-${long}`, '/queue/readings')],
    ['non-ASCII address and gateway', readingToAmqp(reading(), 'passerelle-é', '/queue/mesures-°C-{device}')],
    ['raw payload', readingToAmqp({ ...reading(), kind: 'raw', payload: new Uint8Array([0, 1, 2, 255]) }, 'gw', '/queue/readings')],
    ['epoch 0 and a far timestamp', readingToAmqp(reading({ receivedAt: 0 }), 'gw', '/q')],
    ['year 2300', readingToAmqp(reading({ receivedAt: 10_413_792_000_000 }), 'gw', '/q')],
  ]
  for (const n of [0, 1, 255, 256, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
    cases.push([`deviceSeq ${n}`, readingToAmqp(reading({ deviceSeq: n }), 'gw', '/q')])
    if (n > 0) cases.push([`seq ${n}`, readingToAmqp(reading({ seq: n }), 'gw', '/q')])
  }
  for (const [name, out] of cases) {
    const ours = encodeReadingMessage(out)
    assert.equal(ours.toString('hex'), viaRhea(out).toString('hex'), name)
    // and it decodes to the message that was meant
    const back = rhea.message.decode(ours)
    assert.equal(back.message_id, out.message_id, name)
    assert.equal(back.subject, out.subject, name)
    assert.equal(back.to, out.to, name)
    assert.deepEqual(back.application_properties, out.application_properties, name)
    assert.equal((back.creation_time as Date).getTime(), out.creation_time.getTime(), name)
    assert.equal(back.priority, out.priority, name)
  }
})

test('a negative or fractional sequence number is refused, not mis-encoded', () => {
  const out = readingToAmqp(reading(), 'gw', '/q')
  assert.throws(() => encodeReadingMessage({ ...out, application_properties: { ...out.application_properties, seq: -1 } }), RangeError)
  assert.throws(() => encodeReadingMessage({ ...out, application_properties: { ...out.application_properties, deviceSeq: 1.5 } }), RangeError)
})
