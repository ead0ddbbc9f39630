// The mqtt upstream speaks MQTT 5 (protocolVersion 5, the default): a broker's refusal (PUBACK/PUBREC reason code
// >= 0x80) dead-letters the reading with the code and reason string instead of losing it, a code below 0x80 (0x10 No
// matching subscribers) is accepted, a link loss settles nothing, the broker's Receive Maximum bounds the credit, and
// the readings' user properties travel as MQTT 5 user properties behind the gateway's own. Against a scripted MQTT 5
// peer (mqtt-packet on a socket: exact reason codes, QoS 2, a held ack) with the real MqttUpstream and MQTT.js, and
// end to end: the gateway as a child process, a real Mosquitto with an ACL file, MQTT.js 5 and mosquitto_sub -V 5.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, type Server, type Socket } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import mqttPacket, { type Packet, type IPublishPacket } from 'mqtt-packet'
import mqtt, { type MqttClient } from 'mqtt'
import { MqttUpstream } from '../gateway/upstream/mqtt.ts'
import { publishOutcome, publishPacketBytes, readingToMqtt } from '../gateway/upstream/mqtt-map.ts'
import { mqttUpstream, type MqttUpstreamConfig } from '../gateway/config/sections.ts'
import type { ClaimedRow } from '../gateway/outbox/types.ts'
import type { Outcome } from '../gateway/upstream/types.ts'
import { messageId } from '../gateway/readings.ts'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { MOSQUITTO, requireBinary, mosquittoClientsAvailable } from './helpers/mosquitto.ts'
import { end } from './helpers/mqtt.ts'
import { freePort, pause, scaled, tempDir, waitFor, waitForPort } from './helpers/net.ts'

const cleanups: (() => Promise<void> | void)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })
const log = pino({ level: process.env.TEST_LOG ?? 'silent' })

let nextRow = 0
function row(device: string, userProperties?: Record<string, string>): ClaimedRow {
  const rowId = ++nextRow
  return {
    device, ts: 1_700_000_000_000, deviceSeq: rowId % 2 ? rowId : null, kind: 'json', payload: `{"t":${rowId}}`, link: 'mqtt',
    rowId, seq: rowId, msgId: messageId('gw1', device, rowId), receivedAt: 1_700_000_000_001, priority: false,
    ...(userProperties ? { userProperties: JSON.stringify(userProperties) } : {}),
  }
}

// ---- the pure mapping -------------------------------------------------------------------------------------------

test('mapping: under v5 the gateway\'s own keys first, then the reading\'s user properties (never replacing them); 3.1.1 has none', () => {
  const r = row('dev-1', { site: 'north', Seq: '999', 'x-delay': '5', firmware: '1.2' })
  const v5 = readingToMqtt(r, { topicPrefix: 'up/', gateway: 'gw1', protocolVersion: 5 })
  assert.equal(v5.topic, 'up/dev-1/telemetry')
  assert.equal(JSON.parse(v5.payload).id, r.msgId)
  assert.deepEqual(v5.properties, {
    userProperties: { gateway: 'gw1', device: 'dev-1', seq: String(r.seq), link: 'mqtt', deviceSeq: String(r.deviceSeq), site: 'north', firmware: '1.2' },
    contentType: 'application/json', payloadFormatIndicator: true,
  })
  assert.deepEqual(Object.keys(v5.properties!.userProperties), ['gateway', 'device', 'seq', 'link', 'deviceSeq', 'site', 'firmware'], 'in this order on the wire')
  const plain = readingToMqtt(row('dev-2'), { topicPrefix: 'up/', gateway: 'gw1', protocolVersion: 5 })
  assert.deepEqual(plain.properties!.userProperties, { gateway: 'gw1', device: 'dev-2', seq: String(nextRow), link: 'mqtt' }, 'no deviceSeq, no user properties')
  const v4 = readingToMqtt(r, { topicPrefix: 'up/', gateway: 'gw1', protocolVersion: 4 })
  assert.deepEqual(v4, { topic: v5.topic, payload: v5.payload })
})

test('mapping: the ack decides (>= 0x80 on PUBACK/PUBREC rejected with code and reason string; below accepted); no ack leaves it unsettled', () => {
  const refused = (code: number): Error => Object.assign(new Error('Publish error'), { code })
  const publish = { cmd: 'publish' }
  assert.deepEqual(publishOutcome(null, publish), { outcome: 'accepted', reasonCode: 0 })
  assert.deepEqual(publishOutcome(undefined, { cmd: 'puback', reasonCode: 0x10 }), { outcome: 'accepted', reasonCode: 0x10 })
  assert.deepEqual(publishOutcome(refused(0x87), { cmd: 'puback', reasonCode: 0x87, properties: { reasonString: 'denied by ACL' } }),
    { outcome: 'rejected', reasonCode: 0x87, detail: 'PUBACK 0x87 Not authorized: denied by ACL' })
  assert.deepEqual(publishOutcome(refused(0x97), { cmd: 'pubrec', reasonCode: 0x97 }), { outcome: 'rejected', reasonCode: 0x97, detail: 'PUBREC 0x97 Quota exceeded' })
  assert.deepEqual(publishOutcome(refused(0x99), { cmd: 'puback', reasonCode: 0x99 }), { outcome: 'rejected', reasonCode: 0x99, detail: 'PUBACK 0x99 Payload format invalid' })
  assert.deepEqual(publishOutcome(refused(0x90), { cmd: 'puback', reasonCode: 0x90 }), { outcome: 'rejected', reasonCode: 0x90, detail: 'PUBACK 0x90 Topic Name invalid' })
  assert.deepEqual(publishOutcome(refused(0xa5), { cmd: 'puback', reasonCode: 0xa5 }), { outcome: 'rejected', reasonCode: 0xa5, detail: 'PUBACK 0xA5 error' })
  // A code below 0x80 that MQTT.js still reports as an error is a success by the spec.
  assert.deepEqual(publishOutcome(refused(0x01), { cmd: 'puback', reasonCode: 0x01 }), { outcome: 'accepted', reasonCode: 0x01 })
  // PUBCOMP 0x92 comes after a PUBREC that accepted the message.
  assert.deepEqual(publishOutcome(refused(0x92), { cmd: 'pubcomp', reasonCode: 0x92 }), { outcome: 'accepted', reasonCode: 0x92 })
  assert.deepEqual(publishOutcome(new Error('Connection closed'), undefined), { outcome: 'unsettled', error: 'Connection closed' })
})

test('mapping: publishPacketBytes is the size mqtt-packet generates for the PUBLISH (3.1.1 and 5, QoS 1 and 2, multi-byte UTF-8, across the length boundaries)', () => {
  const sizes = [0, 50, 100, 16_300, 16_400, 2_100_000]
  for (const protocolVersion of [4, 5] as const) {
    for (const qos of [1, 2] as const) {
      for (const n of sizes) {
        const r = { ...row('dévice-ü', { site: 'nörth', big: 'x'.repeat(n % 300) }), payload: JSON.stringify({ s: 'é'.repeat(n) }) }
        const m = readingToMqtt(r, { topicPrefix: 'up/€/', gateway: 'gw1', protocolVersion })
        const wire = mqttPacket.generate({ cmd: 'publish', topic: m.topic, payload: m.payload, qos, messageId: 1, retain: false, dup: false, ...(m.properties ? { properties: m.properties } : {}) } as unknown as Packet, { protocolVersion })
        assert.equal(publishPacketBytes(m, qos), wire.length, `v${protocolVersion} qos ${qos} payload ${n}`)
      }
    }
  }
})

test('config: protocolVersion defaults to 5; 4 is allowed, anything else is refused with the choices', () => {
  const base = { name: 'up', type: 'mqtt', url: 'mqtt://127.0.0.1:1883' }
  assert.equal(mqttUpstream.parse(base).protocolVersion, 5)
  assert.equal(mqttUpstream.parse({ ...base, protocolVersion: 4 }).protocolVersion, 4)
  const bad = mqttUpstream.safeParse({ ...base, protocolVersion: 3 })
  assert.ok(!bad.success)
  assert.deepEqual(bad.error.issues[0]!.path, ['protocolVersion'])
})

// ---- the real MqttUpstream against a scripted MQTT 5 peer ---------------------------------------------------------

interface Peer {
  port: number
  publishes: IPublishPacket[]
  /** Packets other than PUBLISH the upstream sent (PUBREL...). */
  others: Packet[]
  /** Each CONNECT the upstream sent. */
  connects: Packet[]
  connections: number
  send(p: Record<string, unknown>): void
  cut(): void
  close(): Promise<void>
}

/** An MQTT 5 server that answers CONNECT with `connack` and nothing else on its own: the test sends every ack. */
async function scriptedPeer(connack: Record<string, unknown>): Promise<Peer> {
  const port = await freePort()
  let sock: Socket | null = null
  const peer: Peer = {
    port, publishes: [], others: [], connects: [], connections: 0,
    send: (p) => { sock!.write(mqttPacket.generate(p as unknown as Packet, { protocolVersion: 5 })) },
    cut: () => { sock?.destroy() },
    close: () => new Promise((r) => { sock?.destroy(); server.close(() => r()) }),
  }
  const server: Server = createServer((s) => {
    sock = s
    peer.connections++
    const parser = mqttPacket.parser({ protocolVersion: 5 })
    parser.on('packet', (p: Packet) => {
      if (p.cmd === 'connect') { peer.connects.push(p); peer.send({ cmd: 'connack', sessionPresent: false, ...connack }) }
      else if (p.cmd === 'publish') peer.publishes.push(p)
      else if (p.cmd !== 'pingreq') peer.others.push(p)
    })
    s.on('data', (d) => parser.parse(d))
    s.on('error', () => undefined)
  })
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()))
  cleanups.push(() => peer.close())
  return peer
}

function upstreamTo(port: number, extra: Partial<MqttUpstreamConfig> = {}): MqttUpstream {
  const u = new MqttUpstream(mqttUpstream.parse({ name: 'up', type: 'mqtt', url: `mqtt://127.0.0.1:${port}`, reconnectMinMs: 100, reconnectMaxMs: 200, ...extra }), 'gw1', log)
  cleanups.push(() => u.close())
  return u
}

type Settled = { rowId: number; outcome: Outcome; detail: string | undefined }
const settler = (into: Settled[]) => (rowId: number, outcome: Outcome, detail?: string): void => { into.push({ rowId, outcome, detail }) }
const msgIdOf = (p: IPublishPacket): string => (JSON.parse(p.payload.toString()) as { id: string }).id

test('scripted v5 peer: credit is bounded by the CONNACK Receive Maximum; each PUBACK reason code settles its row as it says; user properties on the wire', async () => {
  const peer = await scriptedPeer({ reasonCode: 0, properties: { receiveMaximum: 4 } })
  const u = upstreamTo(peer.port) // maxInflight 256 by default
  await u.start()
  await waitFor('link up', () => u.status().connected)
  assert.equal(u.credit(), 4, 'the broker takes 4 unanswered QoS 1 publishes: no more credit than that')
  const rows = [row('a', { site: 'north' }), row('a'), row('b'), row('b')]
  const settled: Settled[] = []
  u.deliver(rows, settler(settled))
  await waitFor('4 publishes at the peer', () => peer.publishes.length === 4)
  assert.equal(u.credit(), 0)
  const first = peer.publishes[0]!
  assert.equal(first.topic, 'edgeway/a/telemetry')
  assert.equal(first.qos, 1)
  assert.deepEqual({ ...first.properties?.userProperties }, { gateway: 'gw1', device: 'a', seq: String(rows[0]!.seq), link: 'mqtt', deviceSeq: String(rows[0]!.deviceSeq), site: 'north' })
  assert.equal(first.properties?.contentType, 'application/json')
  const codes = [0x00, 0x10, 0x87, 0x97]
  peer.publishes.forEach((p, i) => peer.send({ cmd: 'puback', messageId: p.messageId, reasonCode: codes[i], ...(codes[i] === 0x87 ? { properties: { reasonString: 'denied by ACL' } } : {}) }))
  await waitFor('all 4 settled', () => settled.length === 4)
  const byId = new Map(settled.map((s) => [s.rowId, s]))
  assert.deepEqual(rows.map((r) => [byId.get(r.rowId)!.outcome, byId.get(r.rowId)!.detail]), [
    ['accepted', undefined], ['accepted', undefined],
    ['rejected', 'PUBACK 0x87 Not authorized: denied by ACL'], ['rejected', 'PUBACK 0x97 Quota exceeded'],
  ])
  assert.deepEqual(peer.publishes.map(msgIdOf), rows.map((r) => r.msgId), 'in row order')
  assert.equal(u.credit(), 4, 'the window is free again')
})

test('scripted v5 peer, QoS 2: PUBREC 0x87 is rejected without a PUBREL; PUBREC 0x00 then PUBCOMP is accepted', async () => {
  const peer = await scriptedPeer({ reasonCode: 0 })
  const u = upstreamTo(peer.port, { qos: 2 })
  await u.start()
  await waitFor('link up', () => u.status().connected)
  const [ok, bad] = [row('q'), row('q')]
  const settled: Settled[] = []
  u.deliver([ok, bad], settler(settled))
  await waitFor('2 publishes at the peer', () => peer.publishes.length === 2)
  const [pOk, pBad] = peer.publishes as [IPublishPacket, IPublishPacket]
  peer.send({ cmd: 'pubrec', messageId: pBad.messageId, reasonCode: 0x87 })
  peer.send({ cmd: 'pubrec', messageId: pOk.messageId, reasonCode: 0 })
  await waitFor('PUBREL for the accepted one', () => peer.others.find((p) => p.cmd === 'pubrel'))
  await pause(100)
  assert.deepEqual(peer.others.map((p) => [p.cmd, (p as { messageId?: number }).messageId]), [['pubrel', pOk.messageId]], 'no PUBREL after a refusing PUBREC')
  assert.deepEqual(settled, [{ rowId: bad.rowId, outcome: 'rejected', detail: 'PUBREC 0x87 Not authorized' }])
  peer.send({ cmd: 'pubcomp', messageId: pOk.messageId, reasonCode: 0 })
  await waitFor('accepted on PUBCOMP', () => settled.length === 2)
  assert.deepEqual(settled[1], { rowId: ok.rowId, outcome: 'accepted', detail: undefined })
})

test('scripted v5 peer: a link loss with publishes unanswered settles none of them (the forwarder releases them)', async () => {
  const peer = await scriptedPeer({ reasonCode: 0 })
  const u = upstreamTo(peer.port)
  await u.start()
  await waitFor('link up', () => u.status().connected)
  const settled: Settled[] = []
  u.deliver([row('l'), row('l'), row('l')], settler(settled))
  await waitFor('3 publishes at the peer', () => peer.publishes.length === 3)
  peer.cut()
  await waitFor('link seen down', () => !u.status().connected)
  await waitFor('reconnected', () => peer.connections === 2 && u.status().connected)
  await pause(100)
  assert.deepEqual(settled, [], 'nothing settled: no ack came')
})

test('scripted v5 peer: a DISCONNECT with a reason code is the link\'s last error, and what was in flight stays unsettled', async () => {
  const peer = await scriptedPeer({ reasonCode: 0 })
  const u = upstreamTo(peer.port, { reconnectMinMs: 5000, reconnectMaxMs: 5000 })
  await u.start()
  await waitFor('link up', () => u.status().connected)
  const settled: Settled[] = []
  u.deliver([row('d')], settler(settled))
  await waitFor('the publish at the peer', () => peer.publishes.length === 1)
  peer.send({ cmd: 'disconnect', reasonCode: 0x93, properties: { reasonString: 'too many in flight' } })
  peer.cut()
  await waitFor('link seen down', () => !u.status().connected)
  assert.equal(u.status().lastError, 'the broker sent DISCONNECT 0x93 Receive Maximum exceeded: too many in flight')
  assert.deepEqual(settled, [])
})

test('scripted v5 peer: a reading over the CONNACK Maximum Packet Size is dead-lettered, never sent; the link stays up and the others go', async () => {
  const peer = await scriptedPeer({ reasonCode: 0, properties: { maximumPacketSize: 600 } })
  const u = upstreamTo(peer.port)
  await u.start()
  await waitFor('link up', () => u.status().connected)
  const small = row('s')
  const big = { ...row('s'), payload: JSON.stringify({ blob: 'x'.repeat(1000) }) }
  const after = row('s')
  const bigBytes = publishPacketBytes(readingToMqtt(big, { topicPrefix: 'edgeway/', gateway: 'gw1', protocolVersion: 5 }), 1)
  const settled: Settled[] = []
  u.deliver([small, big, after], settler(settled))
  await waitFor('2 publishes at the peer', () => peer.publishes.length === 2)
  assert.deepEqual(settled, [{ rowId: big.rowId, outcome: 'rejected', detail: `PUBLISH of ${bigBytes} bytes exceeds the broker's Maximum Packet Size 600 (from its CONNACK)` }])
  assert.deepEqual(peer.publishes.map(msgIdOf), [small.msgId, after.msgId])
  assert.equal(u.credit(), 256 - 2, 'the refused row takes no credit')
  // The limit is exactly the packet's size: a packet of 600 bytes goes.
  const fits = { ...row('s'), payload: '{"b":""}' }
  const base = publishPacketBytes(readingToMqtt(fits, { topicPrefix: 'edgeway/', gateway: 'gw1', protocolVersion: 5 }), 1)
  fits.payload = `{"b":"${'y'.repeat(600 - base)}"}`
  assert.equal(publishPacketBytes(readingToMqtt(fits, { topicPrefix: 'edgeway/', gateway: 'gw1', protocolVersion: 5 }), 1), 600)
  u.deliver([fits], settler(settled))
  await waitFor('the 600-byte publish at the peer', () => peer.publishes.length === 3)
  assert.equal(peer.connections, 1)
  assert.equal(settled.length, 1)
})

test('credentials in the URL (mqtt://user:password@host) log in, and no log line carries the password: it is *** in "upstream connected" and "link down"', async () => {
  const peer = await scriptedPeer({ reasonCode: 0 })
  const lines: string[] = []
  const captured = pino({ level: 'debug' }, { write: (l: string) => { lines.push(l) } })
  const secret = 'S3cret-pw'
  const u = new MqttUpstream(mqttUpstream.parse({ name: 'up', type: 'mqtt', url: `mqtt://edge:${secret}@127.0.0.1:${peer.port}`, reconnectMinMs: 100, reconnectMaxMs: 200 }), 'gw1', captured)
  cleanups.push(() => u.close())
  await u.start()
  await waitFor('link up', () => u.status().connected)
  const connect = peer.connects[0] as { username?: string; password?: Buffer }
  assert.equal(connect.username, 'edge')
  assert.equal(connect.password?.toString(), secret, 'MQTT.js logs in with the URL\'s credentials')
  peer.cut()
  await waitFor('link down logged', () => lines.some((l) => l.includes('upstream link down')))
  const connected = lines.find((l) => l.includes('upstream connected'))
  assert.ok(connected, 'connected is logged')
  assert.equal((JSON.parse(connected) as { url: string }).url, `mqtt://edge:***@127.0.0.1:${peer.port}`)
  assert.deepEqual(lines.filter((l) => l.includes(secret)), [], 'no log line has the password')
  assert.ok(!JSON.stringify(u.status()).includes(secret), 'nor the status')
})

test('scripted peer without MQTT 5 (CONNACK 0x84): the link stays down and its last error says to set protocolVersion: 4', async () => {
  const peer = await scriptedPeer({ reasonCode: 0x84 })
  const u = upstreamTo(peer.port)
  await u.start()
  const err = await waitFor('the error noted', () => u.status().lastError ?? undefined)
  assert.match(err, /Unsupported Protocol Version \(CONNACK 0x84\): the broker does not speak MQTT 5; set protocolVersion: 4 on upstream "up"/)
  assert.equal(u.status().connected, false)
})

// ---- end to end: gateway -> Mosquitto 2 with an ACL --------------------------------------------------------------

interface Mosq { port: number; proc: ChildProcess }

/** Mosquitto with its default max_inflight_messages (20: its CONNACK's Receive Maximum) and `conf` lines added. */
async function mosquittoWith(conf: (dir: string) => string[]): Promise<Mosq> {
  requireBinary(MOSQUITTO, 'mosquitto')
  const port = await freePort()
  const { dir, cleanup } = tempDir('edgeway-mosq-up-')
  writeFileSync(join(dir, 'mosquitto.conf'), [
    `listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', ...conf(dir),
    ...(process.getuid?.() === 0 ? ['user root'] : []), 'log_dest stderr', 'log_type error',
  ].join('\n') + '\n')
  const proc = spawn(MOSQUITTO, ['-c', join(dir, 'mosquitto.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) { const gone = new Promise((r) => proc.once('exit', r)); proc.kill('SIGKILL'); await gone }
    cleanup()
  })
  await waitForPort(port)
  return { port, proc }
}

/** An ACL denying `edgeway/denied/#`. */
function mosquittoWithAcl(): Promise<Mosq> {
  return mosquittoWith((dir) => {
    writeFileSync(join(dir, 'acl'), 'topic deny edgeway/denied/#\ntopic readwrite #\n')
    // max_queued_messages: a bound, not 0 ("no limit"). With 0, Mosquitto 2.0.11 closes the publisher's connection
    // right after the PUBACK 0x87 of an ACL-denied QoS 1 publish ("Bad socket read/write ... Unknown error"), and
    // readings it had forwarded but whose PUBACK the reset lost went again: at least once, but this test counts exactly once.
    return [`acl_file ${join(dir, 'acl')}`, 'max_queued_messages 100000']
  })
}

interface DeadJson { upstream: string; device: string; reason: string; msgId: string; userProperties?: string }

test('end to end: denied readings are dead-lettered with PUBACK 0x87, allowed ones arrive with their user properties, unsubscribed ones are accepted (0x10)', async () => {
  mosquittoClientsAvailable()
  const mosq = await mosquittoWithAcl()
  // A v5 subscriber on edgeway/ok/# only: readings of "lonely" have no subscriber (PUBACK 0x10).
  const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${mosq.port}`, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'v5-sub' })
  cleanups.push(() => end(sub))
  const got: IPublishPacket[] = []
  sub.on('message', (_t, _p, packet) => { got.push(packet) })
  await sub.subscribeAsync('edgeway/ok/#', { qos: 1 })
  // A third-party v5 client too: mosquitto_sub prints the user properties as `name:value name:value`.
  const msub = spawn('/usr/bin/mosquitto_sub', ['-h', '127.0.0.1', '-p', String(mosq.port), '-V', '5', '-q', '1', '-t', 'edgeway/ok/#', '-F', '%t|%P'], { stdio: ['ignore', 'pipe', 'pipe'] })
  cleanups.push(() => { msub.kill('SIGKILL') })
  let msubOut = ''
  msub.stdout.on('data', (d: Buffer) => { msubOut += d.toString() })
  await pause(300) // mosquitto_sub has subscribed (it prints nothing until a message comes)

  const g: GatewayProc = await startGatewayProc({
    mqtt: { openBroker: true },
    // protocolVersion left out: 5 is the default.
    upstreams: [{ name: 'cloud', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, reconnectMinMs: 100, reconnectMaxMs: 1000 }],
  })
  cleanups.push(() => g.cleanup())
  const connected = await g.waitLog((l) => l.msg === 'upstream connected', 10000)
  assert.equal(connected.protocolVersion, 5, 'the connect log says which version the link speaks')
  assert.equal(connected.receiveMaximum, 20, "Mosquitto's default Receive Maximum")

  const device = async (id: string): Promise<MqttClient> => {
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${g.mqttPort}`, { protocolVersion: 5, reconnectPeriod: 0, clientId: id })
    cleanups.push(() => end(c))
    return c
  }
  const [ok, denied, lonely] = [await device('ok'), await device('denied'), await device('lonely')]
  const N = 40 // more than the broker's Receive Maximum at once
  await Promise.all([
    ...Array.from({ length: N }, (_, i) => ok.publishAsync('devices/ok/telemetry', JSON.stringify({ t: i }), { qos: 1, properties: { userProperties: { site: 'north', idx: String(i) } } })),
    ...Array.from({ length: 5 }, (_, i) => denied.publishAsync('devices/denied/telemetry', JSON.stringify({ t: i }), { qos: 1, properties: { userProperties: { site: 'south' } } })),
    ...Array.from({ length: 3 }, (_, i) => lonely.publishAsync('devices/lonely/telemetry', JSON.stringify({ t: i }), { qos: 1 })),
  ])

  await waitFor('the outbox drained (every row settled)', async () => (await g.health()).outbox.depth === 0, 20000)
  const r = await g.cli(['outbox', 'dead', 'list', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const dead = JSON.parse(r.stdout) as DeadJson[]
  assert.deepEqual(dead.map((d) => d.device), Array(5).fill('denied'), 'exactly the denied readings are dead-lettered: none of "ok" or "lonely"')
  for (const d of dead) {
    assert.equal(d.upstream, 'cloud')
    assert.match(d.reason, /^PUBACK 0x87 Not authorized/)
    assert.deepEqual(JSON.parse(d.userProperties!), { site: 'south' }, 'kept with the dead letter, for a retry')
  }
  const text = await g.cli(['outbox', 'dead', 'list'])
  assert.match(text.stdout, /cloud {2}row \d+ {2}test-gw:denied:\d+ {2}PUBACK 0x87 Not authorized/)
  assert.equal(await g.metric('edgeway_refusals_total', { reason: 'upstream_rejected' }), 5)

  await waitFor(`all ${N} allowed readings at the v5 subscriber`, () => got.length >= N, 10000)
  assert.deepEqual(g.logs.filter((l) => String(l.msg).startsWith('upstream link down')).map((l) => l.err), [], 'a refusal does not cost the link')
  assert.equal(got.length, N)
  for (const p of got) {
    const body = JSON.parse(p.payload.toString()) as { device: string; seq: number; metrics: { t: number } }
    assert.equal(p.topic, 'edgeway/ok/telemetry')
    assert.deepEqual({ ...p.properties?.userProperties }, { gateway: 'test-gw', device: 'ok', seq: String(body.seq), link: 'mqtt', site: 'north', idx: String(body.metrics.t) })
    assert.equal(p.properties?.contentType, 'application/json')
  }
  await waitFor(`all ${N} at mosquitto_sub`, () => msubOut.split('\n').filter(Boolean).length >= N, 10000)
  const lines = msubOut.split('\n').filter(Boolean)
  assert.ok(lines.every((l) => /^edgeway\/ok\/telemetry\|gateway:test-gw device:ok seq:\d+ link:mqtt site:north idx:\d+$/.test(l)), lines.slice(0, 3).join('\n'))
  assert.deepEqual(lines.map((l) => Number(/idx:(\d+)/.exec(l)![1])).sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i))
})

test('end to end: Mosquitto with max_packet_size: a reading too large for it is dead-lettered by a v5 upstream (CONNACK limit) and a 3.1.1 one (maxPacketSize), and the link is never lost', async () => {
  mosquittoClientsAvailable()
  // Mosquitto closes the connection of a client that sends a larger packet; to MQTT 5 clients its CONNACK says the limit.
  const mosq = await mosquittoWith(() => ['max_packet_size 1000'])
  const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${mosq.port}`, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'size-sub' })
  cleanups.push(() => end(sub))
  const got: string[] = []
  sub.on('message', (t, p) => { got.push(`${t} ${(JSON.parse(p.toString()) as { metrics: { n: number } }).metrics.n}`) })
  await sub.subscribeAsync('#', { qos: 1 })
  const g: GatewayProc = await startGatewayProc({
    mqtt: { openBroker: true },
    upstreams: [
      { name: 'five', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, topicPrefix: 'five/', reconnectMinMs: 100, reconnectMaxMs: 500 },
      { name: 'four', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, topicPrefix: 'four/', protocolVersion: 4, maxPacketSize: 1000, reconnectMinMs: 100, reconnectMaxMs: 500 },
    ],
  })
  cleanups.push(() => g.cleanup())
  const connected = await g.waitLog((l) => l.msg === 'upstream connected' && l.upstream === 'five', 10000)
  assert.equal(connected.maximumPacketSize, 1000, 'the connect log says the broker\'s limit')
  await g.waitLog((l) => l.msg === 'upstream connected' && l.upstream === 'four', 10000)
  const dev = await mqtt.connectAsync(`mqtt://127.0.0.1:${g.mqttPort}`, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'sizes' })
  cleanups.push(() => end(dev))
  for (const n of [1, 2, 3]) {
    // the second one's envelope is ~1.6 KB: more than Mosquitto takes
    await dev.publishAsync('devices/sizes/telemetry', JSON.stringify({ n, ...(n === 2 ? { blob: 'z'.repeat(1500) } : {}) }), { qos: 1 })
  }
  await waitFor('the outbox drained (every row settled)', async () => (await g.health()).outbox.depth === 0, 20000)
  const r = await g.cli(['outbox', 'dead', 'list', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const dead = (JSON.parse(r.stdout) as DeadJson[]).map((d) => [d.upstream, d.reason.replace(/of \d+ bytes/, 'of N bytes')]).sort()
  assert.deepEqual(dead, [
    ['five', "PUBLISH of N bytes exceeds the broker's Maximum Packet Size 1000 (from its CONNACK)"],
    ['four', 'PUBLISH of N bytes exceeds the broker\'s Maximum Packet Size 1000 (maxPacketSize of upstream "four")'],
  ])
  await waitFor('the small readings at the subscriber', () => got.length >= 4, 10000)
  await pause(200)
  assert.deepEqual(got.sort(), ['five/sizes/telemetry 1', 'five/sizes/telemetry 3', 'four/sizes/telemetry 1', 'four/sizes/telemetry 3'])
  assert.deepEqual(g.logs.filter((l) => String(l.msg).startsWith('upstream link down')).map((l) => `${String(l.upstream)}: ${String(l.err)}`), [], 'no link was lost')
})

test('end to end: a 3.1.1 upstream without maxPacketSize: Mosquitto drops the link on the oversized reading, which is dead-lettered after going alone 3 times; the readings behind it arrive', async () => {
  mosquittoClientsAvailable()
  // Without the limit configured, nothing tells a 3.1.1 client the broker's size limit: the broker just closes the
  // connection. Before, that reading went again first after every reconnect and none of the later ones ever arrived.
  const mosq = await mosquittoWith(() => ['max_packet_size 1000'])
  const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${mosq.port}`, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'poison-sub' })
  cleanups.push(() => end(sub))
  const got: number[] = []
  sub.on('message', (_t, p) => { got.push((JSON.parse(p.toString()) as { metrics: { n: number } }).metrics.n) })
  await sub.subscribeAsync('#', { qos: 1 })
  const g: GatewayProc = await startGatewayProc({
    mqtt: { openBroker: true },
    upstreams: [{ name: 'four', type: 'mqtt', url: `mqtt://127.0.0.1:${mosq.port}`, topicPrefix: 'four/', protocolVersion: 4, reconnectMinMs: 50, reconnectMaxMs: 200 }],
  })
  cleanups.push(() => g.cleanup())
  await g.waitLog((l) => l.msg === 'upstream connected' && l.upstream === 'four', 10000)
  const dev = await mqtt.connectAsync(`mqtt://127.0.0.1:${g.mqttPort}`, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'poison' })
  cleanups.push(() => end(dev))
  const N = 20
  for (let n = 1; n <= N; n++) {
    await dev.publishAsync('devices/poison/telemetry', JSON.stringify({ n, ...(n === 5 ? { blob: 'z'.repeat(1500) } : {}) }), { qos: 1 })
  }
  await waitFor('the outbox drained (every row settled)', async () => (await g.health()).outbox.depth === 0, 30000)
  const r = await g.cli(['outbox', 'dead', 'list', '--json'])
  assert.equal(r.code, 0, r.stderr)
  const dead = JSON.parse(r.stdout) as DeadJson[]
  assert.deepEqual(dead.map((d) => [d.upstream, d.device]), [['four', 'poison']], 'only the oversized reading is dead')
  assert.match(dead[0]!.reason, /link was lost each of the 3 times this reading was the only one in flight.*set maxPacketSize/)
  await waitFor('every other reading at the subscriber', () => got.length >= N - 1, 10000)
  await pause(200)
  assert.deepEqual([...new Set(got)].sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i + 1).filter((n) => n !== 5))
  const losses = g.logs.filter((l) => String(l.msg).startsWith('upstream link down')).length
  assert.ok(losses >= 3 && losses <= 6, `the link was lost by the oversized reading a bounded number of times (${losses})`)
  assert.ok(g.logs.some((l) => l.msg === 'reading dead-lettered: the upstream drops the link whenever it is sent' && l.upstream === 'four'), 'the dead letter is logged as an error')
})
