// mqtt-packet's table of 65,536 two-byte number Buffers (6 MiB of heap) is never built in the gateway: the broker
// turns it off before its first packet (writePacketNumbersUncached, gateway/broker/aedes-adapter.ts). Its own file:
// the table is built by the first packet any client or broker in the process writes, so nothing may run before.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { spawnSync } from 'node:child_process'
import { Aedes } from 'aedes'
import mqtt from 'mqtt'
import { writePacketNumbersUncached, tapWrites } from '../gateway/broker/aedes-adapter.ts'
import { end } from './helpers/mqtt.ts'
import { waitFor } from './helpers/net.ts'

const require = createRequire(import.meta.url)
const numbersCache = (require('mqtt-packet/numbers.js') as { cache: Record<number, Buffer> }).cache
const cleanups: (() => Promise<void>)[] = []
after(async () => { for (const c of cleanups.reverse()) await c() })

test('premise: mqtt-packet 9 builds the 65,536-entry number table at the first packet it writes', () => {
  const r = spawnSync(process.execPath, ['-e', "const p = require('mqtt-packet'); p.generate({ cmd: 'pingreq' }); console.log(Object.keys(require('mqtt-packet/numbers.js').cache).length)"], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout.trim(), '65536', 'if mqtt-packet stops building the table, writePacketNumbersUncached can go')
})

test('writePacketNumbersUncached: no table is built, and packet ids above 255 go right both ways (v5 with the write tap, 3.1.1)', async () => {
  assert.equal(Object.keys(numbersCache).length, 0, 'nothing has written a packet yet in this process')
  writePacketNumbersUncached()
  const aedes = await Aedes.createBroker()
  // The gateway's write tap on the v5 subscriber: it wraps mqtt-packet's writeToStream export (hookWrites).
  aedes.on('client', (client) => {
    if (client.id !== 'sub-5') return
    const write = tapWrites(client, { publish: (p) => write(p), answered: () => undefined })
  })
  const server = createServer((socket) => { aedes.handle(socket) })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(async () => { await new Promise<void>((r) => aedes.close(() => r())); await new Promise<void>((r) => server.close(() => r())) })
  const url = `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`
  for (const protocolVersion of [4, 5] as const) {
    const sub = await mqtt.connectAsync(url, { protocolVersion, reconnectPeriod: 0, clientId: `sub-${protocolVersion}` })
    const pub = await mqtt.connectAsync(url, { protocolVersion, reconnectPeriod: 0, clientId: `pub-${protocolVersion}` })
    cleanups.push(() => end(sub), () => end(pub))
    const got: number[] = []
    sub.on('message', (_t, p) => { got.push(Number(p.toString())) })
    await sub.subscribeAsync('n/#', { qos: 1 })
    const N = 600 // packet ids past 255 and 511: both bytes of the number matter
    for (let i = 0; i < N; i++) await pub.publishAsync(`n/${i}`, String(i), { qos: 1 })
    await waitFor(`${N} messages at the v${protocolVersion} subscriber`, () => got.length === N)
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i))
  }
  assert.equal(Object.keys(numbersCache).length, 0, 'the table was never built')
  // Called again with the export wrapped, the switch still lands on mqtt-packet's own function.
  const original = require('mqtt-packet/writeToStream.js') as { cacheNumbers: boolean }
  original.cacheNumbers = true
  writePacketNumbersUncached()
  assert.equal(original.cacheNumbers, false)
  assert.notEqual(require('mqtt-packet').writeToStream, original, 'the export is the gateway\'s wrapper here')
})
