import { test } from 'node:test'
import assert from 'node:assert/strict'
import { decodeTelemetry, readingMetrics, readingEnvelope, messageId } from '../gateway/readings.ts'
import { mayMatchTelemetry, mayPublish, maySubscribe, parseDeviceTopic, topicKind } from '../gateway/broker/policy.ts'

const NOW = 1_700_000_000_000

test('telemetry JSON decodes into one normalised reading', () => {
  const r = decodeTelemetry('d1', Buffer.from('{"t":21.5,"ok":true,"mode":"eco","ts":1700000001,"seq":7}'), NOW, 'mqtt')
  assert.ok(r.ok)
  assert.equal(r.reading.kind, 'json')
  assert.equal(r.reading.ts, 1_700_000_001_000, 'seconds become ms')
  assert.equal(r.reading.deviceSeq, 7)
  assert.deepEqual(readingMetrics({ kind: 'json', payload: r.reading.payload }), { t: 21.5, ok: true, mode: 'eco' })
  const ms = decodeTelemetry('d1', Buffer.from('{"t":1,"ts":1700000001234}'), NOW, 'mqtt')
  assert.ok(ms.ok && ms.reading.ts === 1_700_000_001_234)
  const nots = decodeTelemetry('d1', Buffer.from('{"t":1}'), NOW, 'mqtt')
  assert.ok(nots.ok && nots.reading.ts === NOW && nots.reading.deviceSeq === null)
})

test('opaque payloads are stored raw', () => {
  const r = decodeTelemetry('d1', Buffer.from([0x01, 0x02, 0xff]), NOW, 'mqtt')
  assert.ok(r.ok)
  assert.equal(r.reading.kind, 'raw')
  assert.deepEqual([...(r.reading.payload as Uint8Array)], [1, 2, 255])
})

test('payloads that look like JSON but are not valid telemetry are refused with a reason', () => {
  const cases: [string, RegExp][] = [
    ['{"t":', /invalid JSON/],
    ['{}', /no metrics/],
    ['{"t":null}', /"t" must be a number, string or boolean, got null/],
    ['{"t":[1]}', /got array/],
    ['{"t":{"a":1}}', /got object/],
    ['{"t":1,"seq":-1}', /"seq" must be a non-negative integer/],
    ['{"t":1,"seq":1.5}', /"seq"/],
    ['{"t":1,"ts":"yesterday"}', /"ts" must be/],
  ]
  for (const [p, re] of cases) {
    const r = decodeTelemetry('d1', Buffer.from(p), NOW, 'mqtt')
    assert.equal(r.ok, false, p)
    if (!r.ok) assert.match(r.reason, re, p)
  }
  const empty = decodeTelemetry('d1', Buffer.alloc(0), NOW, 'mqtt')
  assert.equal(empty.ok, false)
})

test('which subscription filters can match a telemetry topic', () => {
  for (const f of ['#', 'devices/#', 'devices/+/telemetry', 'devices/d1/telemetry', '+/+/telemetry', '+/+/+', 'devices/+/#', '$share/g/devices/+/telemetry']) assert.equal(mayMatchTelemetry(f), true, f)
  for (const f of ['devices/+/state', 'devices/+', 'devices/+/telemetry/x', 'other/#', '$SYS/#', 'devices//telemetry', '+/+', 'devices/+/cmd/#']) assert.equal(mayMatchTelemetry(f), false, f)
})

test('message ids are gateway:device:seq', () => {
  assert.equal(messageId('gw', 'dev-1', 42), 'gw:dev-1:42')
})

test('topic policy: own namespace only, no downlink or error topics, no wildcards above own commands', () => {
  assert.deepEqual(parseDeviceTopic('devices/a/telemetry'), { device: 'a', rest: 'telemetry' })
  assert.equal(parseDeviceTopic('devices/a'), null)
  assert.equal(parseDeviceTopic('other/a/telemetry'), null)
  assert.equal(topicKind('cmd/reboot'), 'cmd')
  assert.equal(topicKind('cmd/reboot/result'), 'cmd_result')
  assert.ok(mayPublish('a', 'devices/a/telemetry').ok)
  assert.ok(mayPublish('a', 'devices/a/state').ok)
  assert.ok(mayPublish('a', 'devices/a/cmd/reboot/result').ok)
  assert.equal(mayPublish('a', 'devices/b/telemetry').ok, false)
  assert.equal(mayPublish('a', 'devices/a/cmd/reboot').ok, false)
  assert.equal(mayPublish('a', 'devices/a/errors').ok, false)
  assert.equal(mayPublish('a', '$SYS/x').ok, false)
  assert.equal(mayPublish('a', 'devices/ab/telemetry').ok, false, 'prefix of another id')
  assert.ok(maySubscribe('a', 'devices/a/cmd/#').ok)
  assert.ok(maySubscribe('a', 'devices/a/cmd/+').ok)
  assert.ok(maySubscribe('a', 'devices/a/errors').ok)
  assert.equal(maySubscribe('a', '#').ok, false)
  assert.equal(maySubscribe('a', 'devices/+/cmd/#').ok, false)
  assert.equal(maySubscribe('a', 'devices/a/#').ok, false)
  assert.equal(maySubscribe('a', 'devices/b/cmd/#').ok, false)
})

test('the upstream envelope splices clean payloads and parses the others: same JSON either way', () => {
  const base = { msgId: 'gw:d1:7', device: 'd1', seq: 7, ts: 1700000000123, receivedAt: 1700000000456, link: 'mqtt', kind: 'json' as const }
  const slow = (payload: string, deviceSeq: number | null): unknown => {
    const body: Record<string, unknown> = { id: base.msgId, device: base.device, seq: base.seq, ts: base.ts, receivedAt: base.receivedAt, link: base.link }
    if (deviceSeq !== null) body.deviceSeq = deviceSeq
    body.metrics = readingMetrics({ kind: 'json', payload })
    return body
  }
  for (const [payload, deviceSeq] of [
    ['{"t":21.5,"ok":true,"mode":"eco"}', null],
    ['{ "t" : 1e3 }', null],
    ['{"t":1,"seq":4,"ts":1700000000}', 4],
    ['{"\\u0074s":5,"x":1}', null],
    ['{"note":"has \\"ts\\" inside","v":2}', null],
  ] as const) {
    const text = readingEnvelope({ ...base, deviceSeq, payload })
    assert.deepEqual(JSON.parse(text), slow(payload, deviceSeq), payload)
    assert.deepEqual(Object.keys(JSON.parse(text) as object), Object.keys(slow(payload, deviceSeq) as object), 'same key order')
  }
  const raw = JSON.parse(readingEnvelope({ ...base, deviceSeq: null, kind: 'raw', payload: Uint8Array.from([0, 255, 7]) })) as { raw: string; metrics?: unknown }
  assert.equal(raw.raw, Buffer.from([0, 255, 7]).toString('base64'))
  assert.equal(raw.metrics, undefined)
})
