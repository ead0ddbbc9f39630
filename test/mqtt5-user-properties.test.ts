// MQTT 5 user properties on a reading (issue 13): kept as the reading's metadata, durably in the outbox before the
// PUBACK, forwarded to AMQP as application properties (the gateway's own keys stay authoritative), bounded (count and
// bytes: PUBACK 0x97; reserved, repeated or empty names: PUBACK 0x83; both counted as refusals). Against a real
// RabbitMQ and the gateway as a child process, with MQTT.js 5 devices; plus the pure parts (checks, mapping, encoder)
// and an outbox.db written by the gateway before user properties existed.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { mkdirSync } from 'node:fs'
import Database from 'better-sqlite3'
import rhea from 'rhea'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { startGatewayProc, addDevice, type GatewayProc } from './helpers/gateway.ts'
import { startRabbitMq, type RabbitMq } from './helpers/rabbitmq.ts'
import { amqpConsumer, type AmqpConsumer } from './helpers/amqp.ts'
import { end } from './helpers/mqtt.ts'
import { waitFor, tempDir, scaled } from './helpers/net.ts'
import { checkUserProperties, MAX_USER_PROPERTIES, MAX_USER_PROPERTY_BYTES } from '../gateway/user-properties.ts'
import { readingToAmqp, type AmqpOut } from '../bridges/amqp/map.ts'
import { encodeReadingMessage } from '../bridges/amqp/encode.ts'
import { messageId } from '../gateway/readings.ts'
import { OutboxStore } from '../gateway/outbox/store.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

let rmq: RabbitMq
before(async () => {
  rmq = await startRabbitMq()
  cleanups.push(() => rmq.cleanup())
})

const upstream = (address: string): Record<string, unknown> => ({ name: 'cloud', type: 'amqp', host: '127.0.0.1', port: rmq.port, username: 'guest', password: 'guest', reconnectMinMs: 100, reconnectMaxMs: 500, address })

async function gateway(address: string, dataDir?: string): Promise<GatewayProc> {
  const g = await startGatewayProc({ upstreams: [upstream(address)] }, dataDir ? { dataDir } : {})
  cleanups.push(() => g.cleanup())
  return g
}

async function device(g: GatewayProc, id: string, secret: string, extra: IClientOptions = {}): Promise<MqttClient> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${g.mqttPort}`, { reconnectPeriod: 0, connectTimeout: scaled(5000), protocolVersion: 5, clientId: id, username: id, password: secret, ...extra })
  await new Promise<void>((resolve, reject) => { c.once('connect', () => resolve()); c.once('error', reject) })
  cleanups.push(() => end(c))
  return c
}

async function consumer(address: string): Promise<AmqpConsumer> {
  const c = await amqpConsumer(rmq.port, address)
  cleanups.push(() => c.close())
  return c
}

const publishRefused = (code: number) => (e: Error & { code?: number }): boolean => e.code === code

// ---- the pure parts -------------------------------------------------------------------------------------------

test('checks: bounded in count and bytes (quota), names neither reserved, repeated nor empty', () => {
  const many = (n: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']))
  assert.equal(checkUserProperties(many(MAX_USER_PROPERTIES)).ok, true)
  const tooMany = checkUserProperties(many(MAX_USER_PROPERTIES + 1))
  assert.ok(!tooMany.ok && tooMany.kind === 'quota', JSON.stringify(tooMany))
  // names and values both count, in UTF-8 bytes
  const value = 'é'.repeat((MAX_USER_PROPERTY_BYTES - 2) / 2) // 2 bytes each, plus the name "n" and one more byte
  assert.equal(checkUserProperties({ n: value + 'x' }).ok, true)
  const tooBig = checkUserProperties({ n: value + 'xx' })
  assert.ok(!tooBig.ok && tooBig.kind === 'quota', JSON.stringify(tooBig))
  for (const name of ['device', 'Device', 'gateway', 'seq', 'deviceSeq', 'DEVICESEQ', 'link', 'x-delay', 'X-Death', 'edgeway-source', '__proto__', '']) {
    const r = checkUserProperties({ [name]: 'v' })
    assert.ok(!r.ok && r.kind === 'name', `${JSON.stringify(name)}: ${JSON.stringify(r)}`)
  }
  const twice = checkUserProperties({ tag: ['a', 'b'] })
  assert.ok(!twice.ok && twice.kind === 'name' && /2 times/.test(twice.reason), JSON.stringify(twice))
  const ok = checkUserProperties({ firmware: '1.2', site: 'north', constructor: 'c' })
  assert.ok(ok.ok)
  assert.deepEqual(JSON.parse(ok.text), { firmware: '1.2', site: 'north', constructor: 'c' })
})

function row(userProperties?: string): Parameters<typeof readingToAmqp>[0] {
  return { device: 'dev-1', ts: 5, deviceSeq: 7, kind: 'json', payload: '{"t":21.5}', link: 'mqtt', rowId: 300, seq: 300, msgId: messageId('gw', 'dev-1', 300), receivedAt: 1_700_000_000_000, ...(userProperties !== undefined ? { userProperties } : {}) }
}

test('AMQP mapping: user properties follow the gateway\'s own application properties, which always win; the encoder writes rhea\'s bytes', () => {
  const viaRhea = (o: AmqpOut): Buffer => {
    const { address: _a, userProperties: _u, body, ...rest } = o
    return rhea.message.encode({ ...rest, body: rhea.message.data_section(body) })
  }
  const checked = checkUserProperties({ firmware: '1.2', site: 'nörth', '7': 'a number-like name', long: 'x'.repeat(300) })
  assert.ok(checked.ok)
  const out = readingToAmqp(row(checked.text), 'gw', '/q')
  assert.deepEqual({ ...out.application_properties }, { gateway: 'gw', device: 'dev-1', seq: 300, link: 'mqtt', deviceSeq: 7, firmware: '1.2', site: 'nörth', '7': 'a number-like name', long: 'x'.repeat(300) })
  const bytes = encodeReadingMessage(out)
  assert.equal(bytes.toString('hex'), viaRhea(out).toString('hex'))
  assert.deepEqual(rhea.message.decode(bytes).application_properties, out.application_properties)
  // A row stored under other rules (or written into the file by hand) cannot replace the gateway's keys.
  const forged = readingToAmqp(row(JSON.stringify({ device: 'victim', gateway: 'evil', seq: '1', deviceSeq: '2', Link: 'x', 'x-delay': '60000', fine: 'yes' })), 'gw', '/q')
  assert.deepEqual({ ...forged.application_properties }, { gateway: 'gw', device: 'dev-1', seq: 300, link: 'mqtt', deviceSeq: 7, fine: 'yes' })
  assert.deepEqual(rhea.message.decode(encodeReadingMessage(forged)).application_properties, forged.application_properties)
  // without user properties: the fixed shape, unchanged
  const plain = readingToAmqp(row(), 'gw', '/q')
  assert.equal(plain.userProperties, undefined)
  assert.equal(encodeReadingMessage(plain).toString('hex'), viaRhea(plain).toString('hex'))
})

/** The outbox schema exactly as the gateway wrote it before user properties (commit f39832b). */
const OLD_SCHEMA = `
  CREATE TABLE readings (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, seq INTEGER NOT NULL, dseq INTEGER,
    ts INTEGER NOT NULL, recv INTEGER NOT NULL, kind INTEGER NOT NULL, link TEXT NOT NULL,
    payload BLOB NOT NULL, bytes INTEGER NOT NULL, prio INTEGER NOT NULL DEFAULT 0);
  CREATE TABLE device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE cursors (upstream TEXT PRIMARY KEY, acked_upto INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  CREATE TABLE dead (
    upstream TEXT NOT NULL, id INTEGER NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, dseq INTEGER,
    ts INTEGER NOT NULL, recv INTEGER NOT NULL, kind INTEGER NOT NULL, link TEXT NOT NULL, payload BLOB NOT NULL,
    reason TEXT NOT NULL, at INTEGER NOT NULL, retry INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (upstream, id));
  CREATE INDEX readings_prio ON readings (id) WHERE prio > 0;
`

/** An outbox.db as the previous version left it: `n` readings of `old-dev` waiting for upstream `cloud`. */
function writeOldOutbox(file: string, n: number): void {
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.exec(OLD_SCHEMA)
  const now = Date.now()
  const ins = db.prepare('INSERT INTO readings (id, device, seq, dseq, ts, recv, kind, link, payload, bytes) VALUES (?,?,?,?,?,?,?,?,?,?)')
  for (let i = 1; i <= n; i++) ins.run(i, 'old-dev', i, i, now, now, 0, 'mqtt', `{"old":${i}}`, 80)
  db.prepare('INSERT INTO device_seq VALUES (?, ?)').run('old-dev', n)
  db.prepare("INSERT INTO meta VALUES ('gateway_id', 'test-gw')").run()
  db.prepare("INSERT INTO meta VALUES ('last_id', ?)").run(String(n))
  db.prepare('INSERT INTO cursors VALUES (?, 0)').run('cloud')
  db.close()
}

test('outbox store: an old file gains the column; rows with and without user properties, dead letters and their retry keep them', () => {
  const { dir, cleanup } = tempDir('edgeway-props-store-')
  cleanups.push(cleanup)
  const file = join(dir, 'outbox.db')
  writeOldOutbox(file, 2)
  const s = new OutboxStore({ file, gatewayId: 'test-gw', upstreams: ['cloud'], maxBytes: 1 << 30, maxAgeMs: 86_400_000 })
  s.open()
  const props = JSON.stringify({ firmware: '1.2' })
  s.appendBatch([
    { device: 'new-dev', ts: 1, deviceSeq: null, kind: 'json', payload: '{"a":1}', link: 'mqtt', userProperties: props },
    { device: 'new-dev', ts: 2, deviceSeq: null, kind: 'json', payload: '{"a":2}', link: 'mqtt' },
    { device: 'new-dev', ts: 3, deviceSeq: null, kind: 'raw', payload: new Uint8Array([1, 2]), link: 'mqtt', userProperties: props, priority: true },
  ])
  const rows = s.claim('cloud', 10)
  assert.deepEqual(rows.map((r) => [r.rowId, r.device, r.seq, r.userProperties]), [
    // the priority lane first
    [5, 'new-dev', 3, props],
    [1, 'old-dev', 1, undefined], [2, 'old-dev', 2, undefined],
    [3, 'new-dev', 1, props], [4, 'new-dev', 2, undefined],
  ])
  s.deadLetter('cloud', 3, 'test')
  assert.equal(s.listDead('cloud')[0]!.userProperties, props)
  s.close()
})

// ---- end to end ---------------------------------------------------------------------------------------------------

test('a v5 reading with user properties reaches AMQP with them as application properties; readings without any are unchanged', async () => {
  const queue = '/queue/props-e2e'
  const c = await consumer(queue)
  const g = await gateway(queue)
  const secret = await addDevice(g, 'sensor-p')
  const d = await device(g, 'sensor-p', secret)
  const ack = await d.publishAsync('devices/sensor-p/telemetry', '{"t":21.5}', { qos: 1, properties: { userProperties: { firmware: '1.2', site: 'north' } } })
  assert.equal((ack as { reasonCode?: number } | undefined)?.reasonCode ?? 0, 0)
  await d.publishAsync('devices/sensor-p/telemetry', '{"t":21.6}', { qos: 1 })
  await d.publishAsync('devices/sensor-p/telemetry', 'opaque bytes', { qos: 1, properties: { userProperties: { encoding: 'ascii' } } })
  const v3 = await device(g, 'sensor-p:v3', secret, { protocolVersion: 4, username: 'sensor-p' })
  await v3.publishAsync('devices/sensor-p/telemetry', '{"t":21.7}', { qos: 1 })
  const got = await waitFor('4 readings on AMQP', () => c.messages.length >= 4 && c.messages, 20000)
  const byT = (t: number) => got.find((m) => (m.body.metrics as { t?: number } | undefined)?.t === t)!
  const seq = (m: { body: Record<string, unknown> }): number => m.body.seq as number
  const first = byT(21.5)
  assert.deepEqual(first.message.application_properties, { gateway: 'test-gw', device: 'sensor-p', seq: seq(first), link: 'mqtt', firmware: '1.2', site: 'north' })
  assert.deepEqual(byT(21.6).message.application_properties, { gateway: 'test-gw', device: 'sensor-p', seq: seq(byT(21.6)), link: 'mqtt' }, 'a v5 reading without user properties')
  assert.deepEqual(byT(21.7).message.application_properties, { gateway: 'test-gw', device: 'sensor-p', seq: seq(byT(21.7)), link: 'mqtt' }, 'an MQTT 3.1.1 reading')
  const raw = got.find((m) => m.body.raw !== undefined)!
  assert.equal(raw.message.application_properties?.encoding, 'ascii', 'an opaque payload keeps its user properties too')
  assert.deepEqual(got.map(seq), [1, 2, 3, 4], 'in order')
})

test('attacker: user properties cannot replace the gateway\'s own (PUBACK 0x83, not stored); too many or too large: PUBACK 0x97; each counted', async () => {
  const queue = '/queue/props-attack'
  const c = await consumer(queue)
  const g = await gateway(queue)
  await addDevice(g, 'victim')
  const d = await device(g, 'mallory', await addDevice(g, 'mallory'))
  const refused = (): Promise<number> => g.metric('edgeway_refusals_total', { reason: 'user_properties' })
  const errors: string[] = []
  d.on('message', (_t, p) => errors.push((JSON.parse(p.toString()) as { reason: string }).reason))
  await d.subscribeAsync('devices/mallory/errors', { qos: 0 })
  const publish = (userProperties: Record<string, string | string[]>, qos: 0 | 1 | 2 = 1) => d.publishAsync('devices/mallory/telemetry', '{"t":1}', { qos, properties: { userProperties } })
  await assert.rejects(publish({ device: 'victim' }), publishRefused(0x83))
  await assert.rejects(publish({ gateway: 'other-gw', site: 'north' }, 2), publishRefused(0x83))
  await assert.rejects(publish({ Device: 'victim' }), publishRefused(0x83))
  await assert.rejects(publish({ 'x-delay': '60000' }), publishRefused(0x83))
  await assert.rejects(publish({ tag: ['a', 'b'] }), publishRefused(0x83))
  await publish({ seq: '1' }, 0) // QoS 0: no ack to carry the reason, the errors topic has it
  await assert.rejects(publish(Object.fromEntries(Array.from({ length: MAX_USER_PROPERTIES + 1 }, (_, i) => [`k${i}`, 'v']))), publishRefused(0x97))
  await assert.rejects(publish({ note: 'x'.repeat(MAX_USER_PROPERTY_BYTES) }), publishRefused(0x97))
  assert.equal(d.connected, true, 'the connection stays up')
  await waitFor('8 refusals counted', async () => (await refused()) === 8 || undefined, 10000)
  await waitFor('the device told why, on its errors topic', () => errors.some((e) => /"seq" is reserved/.test(e)) || undefined, 10000)
  // the one good reading goes through, and is the only one mallory got into the queue
  await publish({ site: 'north' })
  const got = await waitFor('the good reading', () => c.messages.length >= 1 && c.messages, 20000)
  await new Promise((r) => setTimeout(r, scaled(500)))
  assert.equal(c.messages.length, 1, JSON.stringify(c.messages.map((m) => m.message.application_properties)))
  assert.deepEqual(got[0]!.message.application_properties, { gateway: 'test-gw', device: 'mallory', seq: 1, link: 'mqtt', site: 'north' })
})

test('durable before the PUBACK: acked readings with user properties survive kill -9 and arrive with them', async () => {
  const queue = '/queue/props-kill'
  // RabbitMQ away: the readings can only be in the outbox when the gateway dies
  await rmq.stop()
  let restarted = false
  cleanups.push(async () => { if (!restarted) await rmq.start() })
  const g = await gateway(queue)
  const d = await device(g, 'sensor-k', await addDevice(g, 'sensor-k'))
  for (let i = 0; i < 20; i++) await d.publishAsync('devices/sensor-k/telemetry', `{"i":${i}}`, { qos: 1, properties: { userProperties: { batch: 'b1', i: String(i) } } })
  await g.kill()
  await rmq.start()
  restarted = true
  const c = await consumer(queue)
  await g.start()
  const got = await waitFor('20 readings after the restart', () => c.messages.length >= 20 && c.messages, 30000)
  for (const m of got) {
    const i = (m.body.metrics as { i: number }).i
    assert.deepEqual(m.message.application_properties, { gateway: 'test-gw', device: 'sensor-k', seq: m.body.seq, link: 'mqtt', batch: 'b1', i: String(i) })
  }
  assert.deepEqual(got.map((m) => (m.body.metrics as { i: number }).i), Array.from({ length: 20 }, (_, i) => i))
})

test('an outbox.db from before user properties is opened and drained; new readings then carry theirs', async () => {
  const queue = '/queue/props-old-file'
  const { dir, cleanup } = tempDir('edgeway-props-old-')
  cleanups.push(cleanup)
  const dataDir = join(dir, 'data')
  mkdirSync(dataDir)
  writeOldOutbox(join(dataDir, 'outbox.db'), 5)
  const c = await consumer(queue)
  const g = await gateway(queue, dataDir)
  const old = await waitFor('the 5 old readings', () => c.messages.length >= 5 && c.messages, 20000)
  assert.deepEqual(old.map((m) => m.message.message_id), [1, 2, 3, 4, 5].map((i) => `test-gw:old-dev:${i}`))
  assert.deepEqual(old.map((m) => m.body.metrics), [1, 2, 3, 4, 5].map((i) => ({ old: i })))
  assert.deepEqual(old[0]!.message.application_properties, { gateway: 'test-gw', device: 'old-dev', seq: 1, link: 'mqtt', deviceSeq: 1 })
  const d = await device(g, 'old-dev', await addDevice(g, 'old-dev'))
  await d.publishAsync('devices/old-dev/telemetry', '{"new":1}', { qos: 1, properties: { userProperties: { firmware: '2.0' } } })
  const got = await waitFor('the new reading', () => c.messages.length >= 6 && c.messages, 20000)
  assert.equal(got[5]!.message.message_id, 'test-gw:old-dev:6', 'the device sequence continues')
  assert.equal(got[5]!.message.application_properties?.firmware, '2.0')
  await waitFor('outbox drained', async () => (await g.health()).outbox.depth === 0 || undefined, 20000)
})
