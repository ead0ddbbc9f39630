// Pure parts of the amqp bridge: reading -> AMQP message mapping, address templates, config validation.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readingToAmqp, expandAddress, addressUsesDevice, amqpToCommand, commandReply } from '../bridges/amqp/map.ts'
import { amqpUpstream, saslMechanism } from '../bridges/amqp/config.ts'
import { configSchema } from '../app/config/schema.ts'
import type { Reading } from '../gateway/readings.ts'

const json: Reading = {
  rowId: 7, seq: 42, msgId: 'gw1:dev-a:42', receivedAt: 1_700_000_000_123, device: 'dev-a', ts: 1_700_000_000_000,
  deviceSeq: 9, kind: 'json', payload: '{"t":21.5,"on":true}', link: 'mqtt',
}

test('a JSON reading maps to one AMQP message with the stable id, per-device subject/to and properties', () => {
  const m = readingToAmqp(json, 'gw1', '/queue/tele.{gateway}.{device}')
  assert.equal(m.address, '/queue/tele.gw1.dev-a')
  assert.equal(m.to, '/queue/tele.gw1.dev-a')
  assert.equal(m.message_id, 'gw1:dev-a:42')
  assert.equal(m.subject, 'dev-a')
  assert.equal(m.content_type, 'application/json')
  assert.equal(m.durable, true)
  assert.deepEqual(m.creation_time, new Date(1_700_000_000_123))
  assert.deepEqual(m.application_properties, { gateway: 'gw1', device: 'dev-a', seq: 42, link: 'mqtt', deviceSeq: 9 })
  assert.ok(Buffer.isBuffer(m.body))
  assert.deepEqual(JSON.parse(m.body.toString('utf8')), {
    id: 'gw1:dev-a:42', device: 'dev-a', seq: 42, deviceSeq: 9, ts: 1_700_000_000_000, receivedAt: 1_700_000_000_123, link: 'mqtt',
    metrics: { t: 21.5, on: true },
  })
})

test('a raw reading travels base64 in the JSON body; no deviceSeq property when the device sent none', () => {
  const raw: Reading = { ...json, kind: 'raw', payload: new Uint8Array([0, 1, 0xff]), deviceSeq: null }
  const m = readingToAmqp(raw, 'gw1', '/queue/all')
  assert.equal(m.address, '/queue/all')
  assert.deepEqual(m.application_properties, { gateway: 'gw1', device: 'dev-a', seq: 42, link: 'mqtt' })
  const body = JSON.parse(m.body.toString('utf8')) as { raw: string; metrics?: unknown }
  assert.equal(body.raw, 'AAH/')
  assert.equal(body.metrics, undefined)
})

test('address templates', () => {
  assert.equal(expandAddress('/exchange/amq.topic/{gateway}.{device}', 'g', 'd'), '/exchange/amq.topic/g.d')
  assert.equal(expandAddress('cmd/{gateway}', 'g'), 'cmd/g')
  assert.equal(addressUsesDevice('/queue/{device}'), true)
  assert.equal(addressUsesDevice('/queue/{gateway}'), false)
})

test('amqp config: defaults, SASL implied by credentials, and clear validation errors', () => {
  const c = amqpUpstream.parse({ name: 'cloud', type: 'amqp', host: 'broker' })
  assert.equal(c.port, 5672)
  assert.equal(c.delivery, 'at-least-once')
  assert.equal(c.address, '/queue/edgeway')
  assert.equal(saslMechanism(c), 'ANONYMOUS')
  assert.equal(saslMechanism(amqpUpstream.parse({ name: 'c', type: 'amqp', host: 'h', username: 'u', password: 'p' })), 'PLAIN')
  const bad = (v: Record<string, unknown>): string => {
    const r = amqpUpstream.safeParse({ name: 'c', type: 'amqp', host: 'h', ...v })
    assert.equal(r.success, false, JSON.stringify(v))
    return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')
  }
  assert.match(bad({ sasl: 'PLAIN', username: 'u' }), /sasl: SASL PLAIN needs username and password/)
  assert.match(bad({ sasl: 'EXTERNAL' }), /needs tls.cert and tls.key/)
  assert.match(bad({ address: '/queue/{devcie}' }), /only \{gateway\} and \{device\}/)
  assert.match(bad({ delivery: 'twice' }), /delivery/)
  assert.match(bad({ hostname: 'vhost:a', vhost: 'a' }), /either hostname or vhost/)
  assert.match(bad({ tls: { ca: '/x', verify: false } }), /verify|Unrecognized/)
  // Part of the gateway config's upstream union.
  const full = configSchema.parse({ upstreams: [{ name: 'cloud', type: 'amqp', host: 'h', delivery: 'exactly-once', address: '/queue/{gateway}.{device}' }] })
  assert.equal(full.upstreams[0]!.type, 'amqp')
})

test('command messages: device/command from subject or properties, JSON args, TTL from expiry or ttl header', () => {
  const a = amqpToCommand({ message_id: 'm1', subject: 'd1/reboot', reply_to: '/queue/r', body: Buffer.from('{"delay":3}') }, 5000)
  assert.deepEqual(a, { ok: true, replyTo: '/queue/r', command: { id: 'm1', device: 'd1', name: 'reboot', args: { delay: 3 } } })
  const b = amqpToCommand({ message_id: 7, application_properties: { device: 'd2', command: 'set' }, body: { on: true }, ttl: 100, creation_time: new Date(1000) }, 5000)
  assert.deepEqual(b, { ok: true, replyTo: null, command: { id: '7', device: 'd2', name: 'set', args: { on: true }, expiresAt: 1100 } })
  const c = amqpToCommand({ message_id: 'm3', subject: 'd1/x', ttl: 100 }, 5000)
  assert.equal(c.ok && c.command.expiresAt, 5100, 'ttl counts from receipt without creation_time')
  const d = amqpToCommand({ message_id: 'm4', subject: 'd1/x', absolute_expiry_time: new Date(4000) }, 5000)
  assert.equal(d.ok && d.command.expiresAt, 4000)
  assert.deepEqual(amqpToCommand({ subject: 'd1/x' }, 0), { ok: false, id: '', device: 'd1', name: 'x', replyTo: null, error: 'command without message_id' })
  assert.match((amqpToCommand({ message_id: 'm', subject: 'nodevice', reply_to: 'r' }, 0) as { error: string }).error, /must name the device and command/)
  assert.match((amqpToCommand({ message_id: 'm', subject: 'd/x', body: Buffer.from('{bad') }, 0) as { error: string }).error, /not valid JSON/)
})

test('command replies carry the correlation id and the result or the error code', () => {
  const ok = commandReply({ id: 'm1', device: 'd1', name: 'reboot', ok: true, result: { in: 3 } }, '/queue/r', 'gw')
  assert.deepEqual({ ...ok, body: JSON.parse(ok.body.toString()) }, {
    to: '/queue/r', correlation_id: 'm1', subject: 'd1/reboot', content_type: 'application/json',
    application_properties: { gateway: 'gw', device: 'd1', command: 'reboot', ok: true }, body: { ok: true, result: { in: 3 } },
  })
  const bad = commandReply({ id: 'm2', device: 'd1', name: 'x', ok: false, code: 'offline', error: 'device "d1" is offline' }, '/queue/r', 'gw')
  assert.deepEqual(JSON.parse(bad.body.toString()), { ok: false, code: 'offline', error: 'device "d1" is offline' })
  assert.equal(bad.application_properties.code, 'offline')
})
