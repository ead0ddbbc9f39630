// A corrupted outbox at start: moved aside with a timestamp, readable rows salvaged into a fresh outbox with their
// ids and sequences, new readings continue above them, and the gateway starts degraded saying what happened.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { closeSync, existsSync, openSync, readdirSync, statSync, writeFileSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { OutboxStore } from '../gateway/outbox/store.ts'
import { OutboxEngine } from '../gateway/outbox/engine.ts'
import { checkMarker } from '../gateway/outbox/salvage.ts'
import type { FromWorker, OutboxRecovery, WorkerInit } from '../gateway/outbox/protocol.ts'
import type { ReadingInput } from '../gateway/readings.ts'
import { startGatewayProc } from './helpers/gateway.ts'
import { simulateDevice } from './helpers/load.ts'
import { freePort, tempDir, waitFor } from './helpers/net.ts'

const tmp = tempDir('edgeway-corrupt-')
after(() => tmp.cleanup())

const reading = (device: string, n: number): ReadingInput => ({ device, ts: 1_700_000_000_000 + n, deviceSeq: n, kind: 'json', payload: JSON.stringify({ v: n, pad: 'p'.repeat(80) }), link: 'mqtt' })

function fill(file: string, n: number): void {
  const s = new OutboxStore({ file, gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e12 })
  s.open()
  for (let i = 0; i < n; i += 100) s.appendBatch(Array.from({ length: 100 }, (_, k) => reading(k % 2 ? 'b' : 'a', i + k)))
  s.close() // the last connection's close checkpoints the WAL into the file
}

function damage(file: string, fromPage: number, pages: number): void {
  const fd = openSync(file, 'r+')
  try { writeSync(fd, randomBytes(4096 * pages), 0, 4096 * pages, 4096 * fromPage) } finally { closeSync(fd) }
}

function openEngine(file: string): { engine: OutboxEngine; recovery: OutboxRecovery | undefined; sent: FromWorker[] } {
  const sent: FromWorker[] = []
  const init: WorkerInit = { file, gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e12, maintenanceMs: 60_000, latestEveryMs: 0 }
  const engine = new OutboxEngine(init, (m) => sent.push(m))
  engine.open()
  const ready = sent.find((m) => m.t === 'ready')
  assert.ok(ready && ready.t === 'ready')
  return { engine, recovery: ready.recovery, sent }
}

const claimAll = (file: string): { device: string; seq: number; deviceSeq: number | null }[] => {
  const s = new OutboxStore({ file, gatewayId: 'gw', upstreams: ['up'], maxBytes: 1e9, maxAgeMs: 1e12 })
  s.open()
  try { return s.claim('up', 1_000_000) } finally { s.close() }
}

test('damaged pages: the file is moved aside, the readable rows keep their sequences, new ones continue above', () => {
  const file = join(tmp.dir, 'a', 'outbox.db')
  fill(file, 3000)
  const pages = statSync(file).size / 4096
  damage(file, Math.floor(pages / 2), 3)
  const { engine, recovery, sent } = openEngine(file)
  assert.ok(recovery, 'a recovery was reported')
  assert.match(recovery.error, /malformed|corrupt/i)
  assert.ok(existsSync(recovery.movedTo) && /outbox\.db\.corrupt-\d{4}-/.test(recovery.movedTo), recovery.movedTo)
  assert.ok(recovery.salvaged > 2000 && recovery.salvaged < 3000, `salvaged ${recovery.salvaged} of 3000`)
  assert.ok(recovery.unreadable > 0 && recovery.salvaged + recovery.unreadable <= 3000, `unreadable ${recovery.unreadable}`)
  // A new reading after the salvage: its sequence is above every sequence device "a" had.
  engine.handle([{ t: 'append', id: 1, reset: true, names: ['a', 'mqtt'], meta: new Uint32Array([11, 0, 1]), data: new TextEncoder().encode('{"v":99999}'), receivedAt: Date.now() }])
  assert.ok(sent.some((m) => m.t === 'appended'), JSON.stringify(sent.filter((m) => m.t !== 'ready')))
  engine.handle([{ t: 'close', id: 2 }])
  const rows = claimAll(file)
  assert.equal(rows.length, recovery.salvaged + 1)
  const aSeqs = rows.filter((r) => r.device === 'a').map((r) => r.seq)
  assert.equal(aSeqs[aSeqs.length - 1], 1501, 'the sequence table was readable: device a continues at 1501')
  for (const r of rows.slice(0, -1)) assert.equal(r.deviceSeq !== null && r.deviceSeq % 2 === (r.device === 'b' ? 1 : 0), true)
})

test('not a database any more: moved aside, a fresh outbox, nothing salvaged, said so', () => {
  const file = join(tmp.dir, 'b', 'outbox.db')
  fill(file, 200)
  damage(file, 0, 1)
  const { engine, recovery } = openEngine(file)
  engine.handle([{ t: 'close', id: 1 }])
  assert.ok(recovery)
  assert.equal(recovery.unreadableFile, true)
  assert.equal(recovery.salvaged, 0)
  assert.equal(claimAll(file).length, 0)
})

test('a sound file with a corruption marker from the last run is checked, kept and the marker cleared', () => {
  const file = join(tmp.dir, 'c', 'outbox.db')
  fill(file, 200)
  writeFileSync(checkMarker(file), 'test\n')
  const { engine, recovery } = openEngine(file)
  engine.handle([{ t: 'close', id: 1 }])
  assert.equal(recovery, undefined)
  assert.equal(existsSync(checkMarker(file)), false)
  assert.equal(claimAll(file).length, 200)
})

test('the gateway starts on a corrupted outbox: degraded with the reason, devices acked again', async () => {
  // An upstream that never answers: the readings stay in the outbox (without one they are deleted at once).
  const g = await startGatewayProc({ mqtt: { openBroker: true }, upstreams: [{ name: 'nowhere', type: 'mqtt', url: `mqtt://127.0.0.1:${await freePort()}`, reconnectMinMs: 1000, reconnectMaxMs: 5000 }] })
  try {
    const url = `mqtt://127.0.0.1:${g.mqttPort}`
    const d = simulateDevice(url, 'c1', { window: 4, max: 2000 })
    await waitFor('readings acked', () => d.acked.size === 2000, 20000)
    await d.stop()
    assert.equal(await g.stop(), 0)
    const file = join(g.dataDir, 'outbox.db')
    damage(file, Math.floor(statSync(file).size / 4096 / 2), 2)
    await g.start()
    await g.waitLog((l) => l.msg.startsWith('OUTBOX CORRUPTED'), 10000)
    const h = await g.health()
    assert.equal(h.status, 'degraded')
    const reason = h.reasons.find((r) => /outbox was corrupted at start .*moved to .*outbox\.db\.corrupt-.*readings were salvaged/.test(r))
    assert.ok(reason, h.reasons.join('; '))
    const salvaged = Number(/; (\d+) readings were salvaged/.exec(reason)![1])
    assert.ok(salvaged > 1000 && salvaged < 2000, reason)
    assert.equal(h.outbox.depth, salvaged, 'the salvaged readings wait in the fresh outbox for the upstream')
    assert.ok(readdirSync(g.dataDir).some((f) => f.startsWith('outbox.db.corrupt-')))
    const d2 = simulateDevice(url, 'c1', { window: 4, max: 20, startSeq: 5000 })
    await waitFor('acked after the salvage', () => d2.acked.size === 20, 10000)
    await d2.stop()
  } finally {
    await g.cleanup()
  }
})
