// The limits of what waits behind an MQTT 5 client's full Receive Maximum (gateway/broker/outbound-flow.ts), with the
// real gateway and a raw client that acks only when told to: a waiting message whose Message Expiry Interval passes is
// never sent (counted as message_expired), one that waits less goes out with what is left of its interval, and at
// most MAX_HELD wait per connection: the newest beyond are dropped (client_queue_full), the rest arrive in order.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import type { IPublishPacket } from 'mqtt-packet'
import { startGatewayProc, type GatewayProc } from './helpers/gateway.ts'
import { end, type MqttClient } from './helpers/mqtt.ts'
import { waitFor, pause } from './helpers/net.ts'
import { raw5, type Raw5 } from './helpers/raw5.ts'
import { MAX_HELD } from '../gateway/broker/outbound-flow.ts'

let g: GatewayProc
let secret = ''
let pub: MqttClient

const refusals = (reason: string): Promise<number> => g.metric('edgeway_refusals_total', { reason })
const payloads = (ps: IPublishPacket[]): string[] => ps.map((p) => p.payload.toString())
const expiryOf = (p: IPublishPacket): number | undefined => p.properties?.messageExpiryInterval

/** A raw MQTT 5 subscriber of the lab role with the given Receive Maximum. */
async function subscriber(clientId: string, receiveMaximum: number, ...filters: string[]): Promise<Raw5> {
  const { c } = await raw5(g.mqttPort, { clientId, username: 'lab', password: Buffer.from(secret), properties: { receiveMaximum } })
  for (const [i, topic] of filters.entries()) {
    c.send({ cmd: 'subscribe', messageId: i + 1, subscriptions: [{ topic, qos: 1 }] })
    assert.deepEqual((await c.next('suback') as { granted: number[] }).granted, [1])
  }
  return c
}

const ack = (c: Raw5, p: IPublishPacket): void => c.send({ cmd: 'puback', messageId: p.messageId, reasonCode: 0 })

before(async () => {
  g = await startGatewayProc({ roles: { lab: { rules: [{ allow: 'both', topic: 'lab/#' }] } } })
  const r = await g.cli(['client', 'add', 'lab', '--role', 'lab'])
  const m = /^secret: (\S+)$/m.exec(r.stdout)
  if (r.code !== 0 || !m) throw new Error(`client add failed (${r.code}): ${r.stderr}${r.stdout}`)
  secret = m[1]!
  pub = mqtt.connect(`mqtt://127.0.0.1:${g.mqttPort}`, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'lab-pub', username: 'lab', password: secret })
  await new Promise<void>((resolve, reject) => { pub.once('connect', () => resolve()); pub.once('error', reject) })
})
after(async () => { await end(pub); await g?.cleanup() })

test('a message whose expiry passes while it waits for the client\'s Receive Maximum is never sent (message_expired); one that waits less arrives with what is left of its interval', async () => {
  const c = await subscriber('lab-exp', 1, 'lab/exp/#')
  const expiredBefore = await refusals('message_expired')
  // the window (1) is held by the first; a 1 s one and a long one wait behind it
  const waitMs = 2500
  const long = Math.ceil(waitMs / 1000) * 4 + 30
  await pub.publishAsync('lab/exp/first', 'first', { qos: 1, properties: { messageExpiryInterval: long } })
  await c.publishCount(1)
  await pub.publishAsync('lab/exp/short', 'short', { qos: 1, properties: { messageExpiryInterval: 1 } })
  await pub.publishAsync('lab/exp/long', 'long', { qos: 1, properties: { messageExpiryInterval: long } })
  const heldSince = Date.now()
  await pause(waitMs)
  const waited = Date.now() - heldSince
  assert.ok(waited > 1000, 'longer than the short one\'s interval')
  assert.deepEqual(payloads(c.publishes), ['first'], 'nothing beyond the window while it is held')
  assert.equal(expiryOf(c.publishes[0]!), long, 'sent at once: its interval as published')
  ack(c, c.publishes[0]!)
  await c.publishCount(2)
  await pause(500)
  assert.deepEqual(payloads(c.publishes), ['first', 'long'], 'the expired one is never sent')
  const left = expiryOf(c.publishes[1]!)
  assert.ok(left !== undefined && left >= 1 && left <= long - Math.floor(waited / 1000),
    `the long one carries what is left of its ${long} s after waiting ${waited} ms, got ${left}`)
  assert.equal(await refusals('message_expired') - expiredBefore, 1)
  ack(c, c.publishes[1]!)
  // the window is free again: a new one goes straight out, its interval untouched
  await pub.publishAsync('lab/exp/after', 'after', { qos: 1, properties: { messageExpiryInterval: long } })
  await c.publishCount(3)
  assert.equal(expiryOf(c.publishes[2]!), long)
  await pause(300)
  assert.deepEqual(payloads(c.publishes), ['first', 'long', 'after'])
  await c.end()
})

test('a retained message with an expiry that waits behind a full window on subscribe: dropped once expired, else sent with what is left since it was published', async () => {
  await pub.publishAsync('lab/ret/short', 'short', { qos: 1, retain: true, properties: { messageExpiryInterval: 2 } })
  const long = 60
  await pub.publishAsync('lab/ret/long/x', 'long', { qos: 1, retain: true, properties: { messageExpiryInterval: long } })
  const published = Date.now()
  // Exact, not scaled: half a second between publishing and subscribing puts the retained message's own deadline
  // half a second before "its interval (rounded up) from when it was queued", which a quarter-second-off send exposes
  await new Promise((r) => setTimeout(r, 500))
  const c = await subscriber('lab-ret', 1, 'lab/ret/live')
  const expiredBefore = await refusals('message_expired')
  await pub.publishAsync('lab/ret/live', 'live', { qos: 1 })
  await c.publishCount(1)
  // the window is held by the live one: both retained ones wait
  for (const [i, topic] of ['lab/ret/short', 'lab/ret/long/+'].entries()) {
    c.send({ cmd: 'subscribe', messageId: 10 + i, subscriptions: [{ topic, qos: 1 }] })
    await c.next('suback')
  }
  await pause(3250 - (Date.now() - published))
  assert.ok(Date.now() - published > 2000)
  assert.deepEqual(payloads(c.publishes), ['live'])
  const released = Date.now()
  ack(c, c.publishes[0]!)
  await c.publishCount(2)
  await pause(500)
  assert.deepEqual(payloads(c.publishes), ['live', 'long'], 'the expired retained one is never sent')
  // it was published before `published` and sent after `released`: no more than this is left of it
  const most = Math.ceil((published + long * 1000 - released) / 1000)
  const left = expiryOf(c.publishes[1]!)
  assert.ok(left !== undefined && left >= 1 && left <= most, `at most ${most} s left of ${long} s published ${released - published} ms before it was sent, got ${left}`)
  assert.equal(await refusals('message_expired') - expiredBefore, 1)
  ack(c, c.publishes[1]!)
  await c.end()
})

test(`at most ${MAX_HELD} messages wait per connection: the newest beyond are dropped (client_queue_full); the others arrive in order once acked, none twice`, async () => {
  const c = await subscriber('lab-cap', 1, 'lab/cap/#')
  const fullBefore = await refusals('client_queue_full')
  const over = 25
  // one in flight (the window of 1), MAX_HELD waiting, `over` more
  const total = 1 + MAX_HELD + over
  for (let i = 0; i < total; i++) await pub.publishAsync(`lab/cap/t${i % 3}`, `${i}`, { qos: 1 })
  await waitFor(`${over} dropped`, async () => await refusals('client_queue_full') - fullBefore >= over)
  await pause(300)
  assert.equal(await refusals('client_queue_full') - fullBefore, over, 'exactly the ones beyond the cap')
  assert.deepEqual(payloads(c.publishes), ['0'], 'the window is held: one in flight')
  for (let n = 0; n < 1 + MAX_HELD; n++) {
    await c.publishCount(n + 1)
    assert.equal(c.publishes.length, n + 1, `one more per ack (after ${n} acks)`)
    ack(c, c.publishes[n]!)
  }
  await pause(500)
  const got = payloads(c.publishes)
  assert.equal(got.length, 1 + MAX_HELD, 'the dropped ones never come')
  assert.deepEqual(got, Array.from({ length: 1 + MAX_HELD }, (_, i) => `${i}`), 'the first ones, in order')
  assert.equal(new Set(got).size, got.length, 'none twice')
  assert.ok(c.publishes.every((p) => p.qos === 1 && p.dup !== true))
  // the flow goes on after the cap: the next one is sent straight away
  await pub.publishAsync('lab/cap/t0', 'next', { qos: 1 })
  await c.publishCount(2 + MAX_HELD)
  assert.equal(c.publishes.at(-1)!.payload.toString(), 'next')
  assert.equal(await refusals('client_queue_full') - fullBefore, over)
  await c.end()
})
